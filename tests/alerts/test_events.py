"""Alert events: written once per (budget, threshold, window), with their deliveries."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import func, insert, select

from tollhouse.alerts.events import BudgetAlert, encode, record
from tollhouse.alerts.models import alert_deliveries, alert_events, notification_channels

NOW = datetime(2026, 11, 21, 12, tzinfo=UTC)


def alert(**changes) -> BudgetAlert:
    fields = dict(
        budget_id="b1",
        scope_kind="team",
        scope_id="t1",
        scope_name="search",
        threshold=Decimal("0.8"),
        spend=Decimal("80.000000001"),
        max_limit=Decimal(100),
        window_start=NOW - timedelta(days=1),
        window_end=NOW + timedelta(days=29),
        refused=False,
        projected=None,
        channel_ids=None,
        team_id="t1",
        customer_id="c1",
    )
    fields.update(changes)
    return BudgetAlert(**fields)


async def add_channel(conn, channel_id: str, default: bool) -> None:
    await conn.execute(
        insert(notification_channels).values(
            id=channel_id,
            name=channel_id,
            type="webhook",
            config={"url": "http://127.0.0.1:9/hook"},
            is_default=default,
            created_at=NOW,
            updated_at=NOW,
        )
    )


async def counts(engine) -> tuple[int, int]:
    async with engine.connect() as conn:
        events = (await conn.execute(select(func.count()).select_from(alert_events))).scalar()
        sends = (await conn.execute(select(func.count()).select_from(alert_deliveries))).scalar()
    return events, sends


async def test_one_event_per_threshold_and_window_however_many_writers(engine):
    async with engine.begin() as conn:
        await add_channel(conn, "ops", default=True)
        await add_channel(conn, "finance", default=True)
        await add_channel(conn, "other", default=False)

    async def write() -> str | None:
        async with engine.begin() as conn:
            return await record(conn, alert(), NOW)

    winners = [w for w in await asyncio.gather(*(write() for _ in range(8))) if w]
    assert len(winners) == 1
    assert await counts(engine) == (1, 2)  # the two default channels

    async with engine.begin() as conn:  # the next threshold, and the next window, alert
        assert await record(conn, alert(threshold=Decimal(1)), NOW)
        later = alert(window_start=NOW + timedelta(days=29), window_end=NOW + timedelta(days=59))
        assert await record(conn, later, NOW)
        assert await record(conn, alert(), NOW) is None
    assert await counts(engine) == (3, 6)


async def test_a_budget_sends_to_its_own_channels(engine):
    async with engine.begin() as conn:
        await add_channel(conn, "ops", default=True)
        await add_channel(conn, "pager", default=False)
        event_id = await record(conn, alert(channel_ids=("pager", "pager")), NOW)
        rows = (await conn.execute(select(alert_deliveries.c.channel_id))).scalars().all()
    assert event_id and rows == ["pager"]


async def test_the_payload_has_litellm_names_and_exact_numbers(engine):
    async with engine.begin() as conn:
        event_id = await record(conn, alert(), NOW)
        stored = (await conn.execute(select(alert_events.c.payload))).scalar_one()
    body = encode(stored)
    assert b'"spend":80.000000001' in body and b'"max_budget":100' in body
    sent = json.loads(body, parse_float=Decimal)
    assert sent["event"] == "threshold_crossed" and sent["event_group"] == "team"
    assert sent["event_id"] == event_id and sent["threshold"] == Decimal("0.8")
    assert sent["percentage"] == 80 and sent["team_id"] == "t1" and sent["customer_id"] == "c1"
    assert "80.000000001 USD of 100 USD" in sent["event_message"]
