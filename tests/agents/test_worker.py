"""The conversation worker in the server's own process, against the dev upstream: a
message is answered through the gateway's admission and ledger with the session's key —
deltas that add up to the message, then done with the usage and cost, and a usage record
for the key; a refusal (a spent budget) is an error event and the turn still ends, with
nothing consumed; a cancel stops the running turn; a message delivered twice is answered
once."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from tests.governance.helpers import auth, create_customer, create_key
from tests.support import decode, records, scenario

from tollhouse.agents.worker import INBOUND


async def ask(gateway, key: str, text: str, session_id: str | None = None) -> tuple[str, str]:
    body = {"message": text, **({"session_id": session_id} if session_id else {})}
    sent = await gateway.post("/v1/session/message", json=body, headers=auth(key))
    assert sent.status_code == 200, sent.text
    accepted = decode(sent)
    return accepted["session_id"], accepted["event_id"]


async def turn(gateway, key: str, session_id: str, turn_id: str, seconds: float = 10) -> list[dict]:
    """The assistant events of one turn, once it has ended."""
    for _ in range(int(seconds / 0.05)):
        page = decode(
            await gateway.get(
                f"/v1/session/{session_id}/events", params={"limit": "1000"}, headers=auth(key)
            )
        )
        mine = [
            e["event"]
            for e in reversed(page["events"])
            if e["kind"] == "assistant_event" and e["event"].get("turn_id") == turn_id
        ]
        if mine and mine[-1]["type"] == "done":
            return mine
        await asyncio.sleep(0.05)
    raise AssertionError(f"turn {turn_id} did not end: {mine}")


async def test_a_message_is_answered_through_the_gateway(app, gateway):
    customer = await create_customer(gateway, name="acme")
    key, value = await create_key(gateway, name="agent", customer_id=customer["id"])
    session_id, turn_id = await ask(gateway, value, "Say something")
    got = await turn(gateway, value, session_id, turn_id)
    kinds = [e["type"] for e in got]
    assert kinds[-2:] == ["message", "done"] and set(kinds[:-2]) == {"delta"}
    text = "".join(e["text"] for e in got if e["type"] == "delta")
    assert text and text == got[-2]["text"]
    usage = got[-1]["usage"]
    assert usage["completion_tokens"] == len(kinds) - 2 and Decimal(usage["cost"]) > 0
    used = await records(gateway, app, key_id=key["id"])
    assert len(used) == 1 and used[0]["streamed"] is True
    assert Decimal(used[0]["cost"]) == Decimal(usage["cost"])

    # The next message sees the history: another turn, answered the same way.
    _, second = await ask(gateway, value, "And more", session_id)
    assert (await turn(gateway, value, session_id, second))[-1]["type"] == "done"


async def test_a_refusal_ends_the_turn_with_an_error(app, gateway):
    customer = await create_customer(
        gateway, name="broke", budget={"max_limit": 0, "reset_duration": "1d"}
    )
    key, value = await create_key(gateway, name="agent", customer_id=customer["id"])
    session_id, turn_id = await ask(gateway, value, "Say something")
    got = await turn(gateway, value, session_id, turn_id)
    assert [e["type"] for e in got] == ["error", "done"]
    assert got[0]["code"] == "budget_exceeded"
    assert await records(gateway, app, key_id=key["id"]) == []  # nothing consumed


async def test_cancel_stops_the_running_turn(app, gateway, upstream):
    customer = await create_customer(gateway, name="acme")
    _, value = await create_key(gateway, name="agent", customer_id=customer["id"])
    scenario(upstream, chunk_delay_ms=200)  # a slow reply: 16 words, 3 s
    session_id, turn_id = await ask(gateway, value, "Say something slowly")
    for _ in range(100):  # until it has started
        page = decode(await gateway.get(f"/v1/session/{session_id}/events", headers=auth(value)))
        if any(e["event"].get("type") == "delta" for e in page["events"]):
            break
        await asyncio.sleep(0.05)
    stopped = await gateway.post(f"/v1/session/{session_id}/cancel", headers=auth(value))
    assert stopped.status_code == 200
    got = await turn(gateway, value, session_id, turn_id, seconds=3)
    assert [e["type"] for e in got][-2:] == ["cancelled", "done"]
    assert "message" not in [e["type"] for e in got]


async def test_a_message_delivered_twice_is_answered_once(app, gateway):
    customer = await create_customer(gateway, name="acme")
    _, value = await create_key(gateway, name="agent", customer_id=customer["id"])
    session_id, turn_id = await ask(gateway, value, "Say something")
    first = await turn(gateway, value, session_id, turn_id)
    page = decode(await gateway.get(f"/v1/session/{session_id}/events", headers=auth(value)))
    message = next(e["event"] for e in page["events"] if e["event_id"] == turn_id)
    await app.services.bus.publish(INBOUND, message)  # the bus delivers it again
    await asyncio.sleep(0.5)
    again = await turn(gateway, value, session_id, turn_id)
    assert again == first
