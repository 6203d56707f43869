"""``/v1/session/…`` with virtual keys: a message opens a session (or continues one the
key's tenant owns), is written to its log and published on ``conversation.inbound``;
another tenant's session is a 404 on every route; events read newest first or resumed
after an event; cancel is an event too; bad bodies are 400s naming the field."""

from __future__ import annotations

import pytest
from tests.governance.helpers import auth, create_customer, create_key, create_team
from tests.support import decode


async def tenants(gateway) -> tuple[str, str, str]:
    acme = await create_customer(gateway, name="acme")
    team = await create_team(gateway, name="research", customer_id=acme["id"])
    _, first = await create_key(gateway, name="a1", team_id=team["id"])
    _, second = await create_key(gateway, name="a2", customer_id=acme["id"])
    globex = await create_customer(gateway, name="globex")
    _, other = await create_key(gateway, name="g1", customer_id=globex["id"])
    return first, second, other


async def inbound(app, group: str = "test") -> list[dict]:
    sub = await app.services.bus.subscribe("conversation.inbound", group, "reader")
    got = await sub.fetch(max_count=100, timeout_s=0.2)
    await sub.commit(got)
    await sub.close()
    return [m.event for m in got]


async def test_a_message_opens_a_session_and_reaches_the_bus(app, gateway):
    first, second, other = await tenants(gateway)
    sent = await gateway.post(
        "/v1/session/message",
        json={"message": "Calculate 2 + 2", "persona_id": "math", "metadata": {"lab": "1"}},
        headers=auth(first),
    )
    assert sent.status_code == 200, sent.text
    accepted = decode(sent)
    session_id, event_id = accepted["session_id"], accepted["event_id"]
    assert session_id.startswith("ses_") and event_id.startswith("evt_")
    published = await inbound(app)
    assert [e["event_id"] for e in published] == [event_id]
    assert published[0]["message"] == "Calculate 2 + 2" and published[0]["persona_id"] == "math"

    # Another key of the same customer continues it; another customer cannot see it.
    more = await gateway.post(
        "/v1/session/message",
        json={"session_id": session_id, "message": "and 3 + 3?"},
        headers=auth(second),
    )
    assert more.status_code == 200 and decode(more)["session_id"] == session_id
    for method, path, body in (
        ("POST", "/v1/session/message", {"session_id": session_id, "message": "hi"}),
        ("GET", f"/v1/session/{session_id}/events", None),
        ("POST", f"/v1/session/{session_id}/cancel", None),
    ):
        refused = await gateway.request(method, path, json=body, headers=auth(other))
        assert refused.status_code == 404, (method, path, refused.text)
        assert decode(refused)["error"]["type"] == "not_found_error"

    page = decode(await gateway.get(f"/v1/session/{session_id}/events", headers=auth(first)))
    asked = [e for e in page["events"] if e["kind"] == "conversation_event"]
    assert [e["event"]["message"] for e in asked] == ["and 3 + 3?", "Calculate 2 + 2"]
    assert [e["seq"] for e in page["events"]] == sorted(
        (e["seq"] for e in page["events"]), reverse=True
    )
    after = decode(
        await gateway.get(
            f"/v1/session/{session_id}/events", params={"after": event_id}, headers=auth(first)
        )
    )
    assert "and 3 + 3?" in [e["event"].get("message") for e in after["events"]]
    assert event_id not in [e["event_id"] for e in after["events"]]
    stale = await gateway.get(
        f"/v1/session/{session_id}/events",
        params={"after": "evt_gone00000000"},
        headers=auth(first),
    )
    assert stale.status_code == 404


async def test_cancel_is_an_event_of_the_session(app, gateway):
    first, _, _ = await tenants(gateway)
    opened = decode(
        await gateway.post("/v1/session/message", json={"message": "go"}, headers=auth(first))
    )
    stopped = await gateway.post(f"/v1/session/{opened['session_id']}/cancel", headers=auth(first))
    assert stopped.status_code == 200
    published = await inbound(app)
    assert [e["type"] for e in published] == ["message", "cancel"]


async def test_sessions_need_a_virtual_key(gateway):
    anonymous = await gateway.post("/v1/session/message", json={"message": "hi"})
    assert anonymous.status_code == 401
    wrong = await gateway.post(
        "/v1/session/message", json={"message": "hi"}, headers=auth("th-" + "x" * 40)
    )
    assert wrong.status_code == 401


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({}, "message"),
        ({"message": ""}, "message"),
        ({"message": 1}, "message"),
        ({"message": "hi", "session_id": "not-a-session"}, "session_id"),
        ({"message": "hi", "metadata": {"k": 1}}, "metadata"),
        ({"message": "hi", "attachments": [{"text": "no name"}]}, "attachments"),
    ],
)
async def test_bad_messages_are_400_naming_the_field(gateway, body, param):
    first, _, _ = await tenants(gateway)
    refused = await gateway.post("/v1/session/message", json=body, headers=auth(first))
    assert refused.status_code == 400, refused.text
    assert param in (decode(refused)["error"]["param"] or "")
