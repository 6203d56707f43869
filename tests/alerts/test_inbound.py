"""``POST /api/webhooks/budget``: LiteLLM's budget events, signed, every error path."""

from __future__ import annotations

import json
import time

import pytest
from sqlalchemy import func, select
from tests.alerts.receivers import HttpReceiver
from tests.support import running

from tollhouse.alerts.models import alert_deliveries, alert_events
from tollhouse.alerts.signing import sign

URL = "/api/webhooks/budget"
SECRET = "inbound-secret-0123456789abcdefghijkl"
LITELLM_EVENT = {
    "spend": 98.5,
    "max_budget": 100,
    "token": "88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b",
    "customer_id": "acme",
    "user_id": None,
    "team_id": "search",
    "user_email": None,
    "key_alias": "prod-key",
    "projected_exceeded_date": None,
    "projected_spend": None,
    "event": "threshold_crossed",
    "event_group": "key",
    "event_message": "User Budget: Key crossed 95% of its budget",
}


@pytest.fixture
def settings(make_settings):
    return make_settings(
        inbound_webhook_secret=SECRET,
        alert_poll_interval_s=0.05,
        secret_key="inbound-test-key-0123456789abcdefghijkl",  # webhook URLs are encrypted
    )


def signed(body: bytes, secret: str = SECRET, at: int | None = None) -> dict[str, str]:
    return {"Tollhouse-Signature": sign(secret, body, at), "content-type": "application/json"}


async def post(gateway, body: bytes, headers: dict[str, str]):
    return await gateway.post(URL, content=body, headers=headers)


async def stored(app) -> int:
    async with app.services.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(alert_events))).scalar())


async def test_a_litellm_event_is_stored_once_and_routed(app, gateway):
    receiver = await HttpReceiver().start()
    try:
        made = await gateway.post(
            "/api/notification-channels",
            json={
                "name": "d",
                "type": "webhook",
                "config": {"url": receiver.url},
                "is_default": True,
            },
        )
        assert made.status_code == 201
        body = json.dumps(LITELLM_EVENT).encode()
        first = await post(gateway, body, signed(body))
        assert first.status_code == 200 and first.json()["status"] == "stored"
        again = await post(gateway, body, signed(body))
        assert again.status_code == 200 and again.json()["status"] == "duplicate"
        assert await stored(app) == 1
        alerts = (await gateway.get("/api/alerts")).json()["alerts"]
        assert alerts[0]["source"] == "inbound" and alerts[0]["event"] == "threshold_crossed"
        assert alerts[0]["payload"]["key_alias"] == "prod-key"
        deadline = time.monotonic() + 5
        while not receiver.requests and time.monotonic() < deadline:
            import asyncio

            await asyncio.sleep(0.02)
        assert len(receiver.requests) == 1
        assert receiver.requests[0].json()["event_message"] == LITELLM_EVENT["event_message"]
        async with app.services.engine.connect() as conn:
            assert (
                await conn.execute(select(func.count()).select_from(alert_deliveries))
            ).scalar() == 1
    finally:
        await receiver.stop()


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ({}, "missing"),
        ({"Tollhouse-Signature": "v1=abc"}, "malformed"),
        ("stale", "stale"),
        ("wrong-secret", "does not match"),
    ],
)
async def test_bad_signatures_are_401(app, gateway, headers, reason):
    body = json.dumps(LITELLM_EVENT).encode()
    if headers == "stale":
        headers = signed(body, at=int(time.time()) - 3600)
    elif headers == "wrong-secret":
        headers = signed(body, secret="other")
    response = await post(gateway, body, headers)
    assert response.status_code == 401, response.text
    assert response.json()["code"] == "invalid_signature" and reason in response.json()["error"]
    assert await stored(app) == 0


@pytest.mark.parametrize("body", [b"{not json", b"", b"[1, 2]", b"\xff\xfe"])
async def test_malformed_json_is_400(app, gateway, body):
    response = await post(gateway, body, signed(body))
    assert response.status_code == 400, response.text
    assert await stored(app) == 0


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"spend": "lots"}, "spend"),
        ({"event": "weather"}, "event"),
        ({"event_group": "galaxy"}, "event_group"),
        ({"event_message": ""}, "event_message"),
        ({"spend": None}, "spend"),
    ],
)
async def test_schema_errors_are_422_naming_the_field(app, gateway, change, field):
    body = json.dumps({**LITELLM_EVENT, **change}).encode()
    response = await post(gateway, body, signed(body))
    assert response.status_code == 422, response.text
    assert response.json()["error"].startswith(field)
    assert await stored(app) == 0


async def test_missing_field_is_422(app, gateway):
    event = dict(LITELLM_EVENT)
    del event["event_group"]
    body = json.dumps(event).encode()
    response = await post(gateway, body, signed(body))
    assert response.status_code == 422 and response.json()["error"].startswith("event_group")


async def test_off_without_a_secret(make_settings):
    async with running(make_settings()) as (_, client):
        body = json.dumps(LITELLM_EVENT).encode()
        response = await client.post(URL, content=body, headers=signed(body))
    assert response.status_code == 503 and "INBOUND_WEBHOOK_SECRET" in response.text
