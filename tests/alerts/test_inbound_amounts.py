"""Inbound budget events with any amount LiteLLM may send, on SQLite and Postgres, and
their delivery whatever they lack: stored exactly, the columns rounded to the nano-dollar
(half-even), sent to a real receiver — never a 500, never a delivery stuck unrecorded."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import insert, select
from tests.alerts.receivers import HttpReceiver
from tests.support import running, wait_until

from tollhouse.alerts.models import alert_attempts, alert_deliveries, notification_channels
from tollhouse.alerts.signing import sign

URL = "/api/webhooks/budget"
SECRET = "inbound-secret-0123456789abcdefghijkl"
EVENT = {
    "event": "threshold_crossed",
    "event_group": "key",
    "event_message": "Key crossed 95% of its budget",
    "token": "tok",
    "key_alias": "prod-key",
}


@pytest.fixture
def settings(make_settings, both_stores):
    return make_settings(
        **both_stores,
        inbound_webhook_secret=SECRET,
        secret_key="inbound-amounts-key-0123456789abcdef",
        alert_poll_interval_s=0.05,
        alert_retry_base_s=0.01,
        alert_retry_max_s=0.02,
        alert_max_attempts=3,
    )


async def post(client, raw: bytes):
    headers = {"Tollhouse-Signature": sign(SECRET, raw), "content-type": "application/json"}
    return await client.post(URL, content=raw, headers=headers)


def raw_event(**amounts: str) -> bytes:
    """The event with amounts written as bare JSON numbers, as LiteLLM's floats are."""
    text = json.dumps(EVENT)[:-1]
    return (text + "".join(f', "{k}": {v}' for k, v in amounts.items()) + "}").encode()


@pytest.mark.parametrize(
    ("spend", "column"),
    [
        ("0.12345678901", "0.123456789"),
        ("0.0000000025", "0.000000002"),  # half-even: to the even nano
        ("0.0000000035", "0.000000004"),
        ("98.5", "98.5"),
    ],
)
async def test_spend_beyond_nano_precision_is_stored_exactly_and_rounded_in_the_column(
    settings, spend, column
):
    async with running(settings) as (_, client):
        response = await post(client, raw_event(spend=spend, max_budget="100.000000000001"))
        assert response.status_code == 200, response.text
        (alert,) = json.loads((await client.get("/api/alerts")).text, parse_float=Decimal)["alerts"]
    assert alert["payload"]["spend"] == spend  # the sender's value, digit for digit
    assert alert["payload"]["max_budget"] == "100.000000000001"
    assert alert["spend"] == Decimal(column)
    assert alert["max_limit"] == Decimal(100)


@pytest.mark.parametrize(
    ("amounts", "field"),
    [
        ({"spend": "1e30"}, "spend"),
        ({"spend": "-1e30"}, "spend"),
        ({"spend": "1e1000000", "max_budget": "1"}, "spend"),
        ({"spend": "1", "max_budget": "1e-1000000"}, "max_budget"),
        ({"spend": "9223372036.854775808"}, "spend"),
        ({"spend": "1", "max_budget": "1e20"}, "max_budget"),
    ],
)
async def test_amounts_beyond_the_columns_are_422_naming_the_field(settings, amounts, field):
    async with running(settings) as (_, client):
        response = await post(client, raw_event(**amounts))
        assert response.status_code == 422, response.text
        assert response.json()["error"].startswith(field)
        assert (await client.get("/api/alerts")).json()["count"] == 0


async def test_an_event_without_max_budget_is_delivered(settings):
    receiver = await HttpReceiver().start()
    try:
        async with running(settings) as (app, client):
            made = await client.post(
                "/api/notification-channels",
                json={
                    "name": "d",
                    "type": "webhook",
                    "config": {"url": receiver.url},
                    "is_default": True,
                },  # fmt: skip
            )
            assert made.status_code == 201, made.text
            slack = await client.post(
                "/api/notification-channels",
                json={
                    "name": "s",
                    "type": "slack",
                    "config": {"webhook_url": receiver.url},
                    "is_default": True,
                },  # fmt: skip
            )
            assert slack.status_code == 201, slack.text
            assert (await post(client, raw_event(spend="12.5"))).status_code == 200

            async def delivered() -> bool:
                async with app.services.engine.connect() as conn:
                    rows = (await conn.execute(select(alert_deliveries.c.status))).scalars()
                    return sorted(rows) == ["sent", "sent"]

            await wait_until(delivered, within=10)
        bodies = sorted((r.json() for r in receiver.requests), key=lambda b: "blocks" in b)
        assert bodies[0]["spend"] == Decimal("12.5") and bodies[0]["max_budget"] is None
        assert "unknown" in json.dumps(bodies[1])  # the Slack text says what it lacks
    finally:
        await receiver.stop()


async def test_a_channel_that_cannot_render_records_failed_attempts_and_gives_up(settings):
    """A channel row the API would refuse (written by hand, or by an older version):
    every attempt is recorded as failed, with backoff, until ``alert_max_attempts``."""
    async with running(settings) as (app, client):
        now = datetime.now(UTC)
        async with app.services.engine.begin() as conn:
            await conn.execute(
                insert(notification_channels).values(
                    id=str(uuid.uuid4()),
                    name="broken",
                    type="email",
                    is_default=True,
                    config={"host": "127.0.0.1", "port": 9, "from": "a@b", "to": [1, 2]},
                    created_at=now,
                    updated_at=now,
                )  # fmt: skip
            )
        assert (await post(client, raw_event(spend="1", max_budget="2"))).status_code == 200

        async def given_up() -> bool:
            async with app.services.engine.connect() as conn:
                rows = (await conn.execute(select(alert_deliveries))).all()
                return bool(rows) and rows[0].status == "failed"

        await wait_until(given_up, within=10)
        async with app.services.engine.connect() as conn:
            delivery = (await conn.execute(select(alert_deliveries))).one()
            attempts = (await conn.execute(select(alert_attempts))).all()
    assert delivery.attempts == 3 and len(attempts) == 3
    assert not any(a.ok for a in attempts)
    assert all("TypeError" in (a.error or "") for a in attempts), [a.error for a in attempts]
