"""Threshold events from real traffic: 80 % and 100 % once each per window, even when
200 concurrent requests cross both (the embedded meter; docs/alerts.md)."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest
from sqlalchemy import select
from tests.governance.helpers import chat, create_key, usd, worst_case_nanos
from tests.support import running, scenario

from tollhouse.alerts.models import alert_events


@pytest.fixture
def settings(make_settings, both_stores):
    return make_settings(allow_anonymous=False, **both_stores)


async def events(app) -> list[tuple[str, Decimal, bool]]:
    await app.services.alerts.flush()
    async with app.services.engine.connect() as conn:
        rows = await conn.execute(
            select(alert_events.c.event, alert_events.c.threshold, alert_events.c.payload)
        )
        return sorted((r.event, r.threshold, r.payload["refused"]) for r in rows)


async def test_200_concurrent_requests_cross_80_and_100_percent_once_each(app, gateway, upstream):
    budget = {"max_limit": usd(20 * worst_case_nanos()), "reset_duration": "1d"}
    _, value = await create_key(gateway, budget=budget)
    scenario(upstream, latency_ms=20, count=200)

    responses = await asyncio.gather(*(chat(gateway, value) for _ in range(200)))

    assert {r.status_code for r in responses} == {200, 402}
    seen = await events(app)
    assert [(e, t) for e, t, _ in seen] == [
        ("budget_crossed", Decimal(1)),
        ("threshold_crossed", Decimal("0.8")),
    ]


async def test_a_budget_that_refuses_reports_100_percent_once(app, gateway, upstream):
    # Worst cases no longer fit long before settled spend reaches 100 %.
    budget = {
        "max_limit": usd(worst_case_nanos() + worst_case_nanos() // 2),
        "reset_duration": "1d",
    }
    _, value = await create_key(gateway, budget=budget)
    assert (await chat(gateway, value)).status_code == 200
    for _ in range(5):
        assert (await chat(gateway, value)).status_code == 402
    seen = await events(app)
    assert ("budget_crossed", Decimal(1), True) in seen
    assert [t for _, t, _ in seen].count(Decimal(1)) == 1


async def test_two_replicas_on_redis_alert_once_each(
    make_settings, both_stores, redis_url, upstream
):
    import contextlib

    settings = make_settings(allow_anonymous=False, redis_url=redis_url, **both_stores)
    async with contextlib.AsyncExitStack() as stack:
        group = [await stack.enter_async_context(running(settings)) for _ in range(2)]
        app, client = group[0]
        budget = {"max_limit": usd(20 * worst_case_nanos()), "reset_duration": "1d"}
        _, value = await create_key(client, budget=budget)
        await group[1][0].services.admission.reload()
        scenario(upstream, latency_ms=20, count=200)

        calls = (chat(group[i % 2][1], value) for i in range(200))
        responses = await asyncio.gather(*calls)

        assert {r.status_code for r in responses} == {200, 402}
        for replica, _ in group:
            for _ in range(200):  # settles reach Redis, then the alert writers run
                if replica.services.admission.meter.pending == 0:
                    break
                await asyncio.sleep(0.01)
            await replica.services.alerts.flush()
        seen = await events(app)
    assert [(e, t) for e, t, _ in seen] == [
        ("budget_crossed", Decimal(1)),
        ("threshold_crossed", Decimal("0.8")),
    ]
