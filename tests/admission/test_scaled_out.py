"""The shared meter (Redis) with two replicas in one process: the guarantees of
docs/deployment.md hold across them, and counters survive Redis losing its data. On
SQLite and Postgres.

Two complete apps share one database and one real ``redis-server``; every burst is
spread over both. Settles reach Redis from a background task, so each check first waits
for both replicas' queues to drain (``quiet``), then reads counters through the admin
API, which reads Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from tests.governance.helpers import (
    admin,
    assert_counters_match_ledger,
    chat,
    create_customer,
    create_key,
    create_team,
    records,
    running,
    scenario,
    usd,
    worst_case_nanos,
)

from tollhouse.app import Tollhouse

Replica = tuple[Tollhouse, httpx.AsyncClient]


@pytest.fixture
def settings(make_settings, redis_url, both_stores):
    """Redis with either database: the scaled-out mode is Postgres, but one replica on
    SQLite with Redis is allowed too."""
    return make_settings(allow_anonymous=False, redis_url=redis_url, **both_stores)


@contextlib.asynccontextmanager
async def replicas(settings: Any, n: int = 2) -> AsyncIterator[list[Replica]]:
    async with contextlib.AsyncExitStack() as stack:
        yield [await stack.enter_async_context(running(settings)) for _ in range(n)]


async def quiet(group: list[Replica]) -> None:
    """Every settle sent to Redis and every record in the ledger, on every replica."""
    for _ in range(500):
        if all(app.services.admission.meter.pending == 0 for app, _ in group):
            break
        await asyncio.sleep(0.01)
    for app, _ in group:
        await app.services.recorder.flush()
        assert app.services.admission.meter.pending == 0


async def spread(group: list[Replica], value: str, n: int, **body: Any) -> list[httpx.Response]:
    calls = (chat(group[i % len(group)][1], value, **body) for i in range(n))
    return list(await asyncio.gather(*calls))


def statuses(responses: list[httpx.Response]) -> Counter[int]:
    return Counter(r.status_code for r in responses)


async def test_two_replicas_never_overspend(settings, upstream):
    async with replicas(settings) as group:
        app, client = group[0]
        customer = await create_customer(client, budget={"max_limit": 1000, "reset_duration": "1d"})
        team = await create_team(client, customer_id=customer["id"])
        max_limit = usd(5 * worst_case_nanos())
        budget = {"max_limit": max_limit, "reset_duration": "1d"}
        key, value = await create_key(client, team_id=team["id"], budget=budget)
        await group[1][0].services.admission.reload()
        scenario(upstream, latency_ms=40, count=200)

        responses = await spread(group, value, 200)

        seen = statuses(responses)
        assert set(seen) <= {200, 402}, seen
        assert seen[200] >= 5
        await quiet(group)
        for _, other in group:
            rows = await assert_counters_match_ledger(other, app, "virtual-keys", key["id"])
            spent = sum((Decimal(r["cost"]) for r in rows), Decimal(0))
            assert spent <= max_limit
            assert len(rows) == seen[200]
        await assert_counters_match_ledger(client, app, "customers", customer["id"])


@pytest.mark.parametrize("scope", ["key", "team", "customer"])
async def test_request_limit_is_exact_across_replicas(settings, upstream, scope):
    rate = {"request_max_limit": 10, "request_reset_duration": "1h"}
    async with replicas(settings) as group:
        app, client = group[0]
        customer = await create_customer(
            client, **({"rate_limit": rate} if scope == "customer" else {})
        )
        team = await create_team(
            client, customer_id=customer["id"], **({"rate_limit": rate} if scope == "team" else {})
        )
        key, value = await create_key(
            client, team_id=team["id"], **({"rate_limit": rate} if scope == "key" else {})
        )
        await group[1][0].services.admission.reload()
        scenario(upstream, latency_ms=30, count=50)

        responses = await spread(group, value, 50)

        assert statuses(responses) == {200: 10, 429: 40}
        await quiet(group)
        assert len(await records(client, app)) == 10


async def test_counters_are_rebuilt_when_redis_loses_its_data(settings, upstream, redis_server):
    async with replicas(settings) as group:
        app, client = group[0]
        budget = {"max_limit": 1000, "reset_duration": "1d"}
        rate = {"request_max_limit": 10_000, "request_reset_duration": "1d"}
        rate |= {"token_max_limit": 10**9, "token_reset_duration": "1d"}
        key, value = await create_key(client, budget=budget, rate_limit=rate)
        await group[1][0].services.admission.reload()
        assert statuses(await spread(group, value, 30)) == {200: 30}
        await quiet(group)

        # In flight while Redis forgets everything: their settles land on rebuilt counters.
        scenario(upstream, latency_ms=150, count=20)
        in_flight = asyncio.ensure_future(spread(group, value, 20))
        await asyncio.sleep(0.05)
        redis_server.flush()
        after = await spread(group, value, 20)
        assert statuses(await in_flight) == {200: 20}
        assert statuses(after) == {200: 20}

        await quiet(group)
        for _, other in group:
            rows = await assert_counters_match_ledger(other, app, "virtual-keys", key["id"])
            assert len(rows) == 70


async def test_redis_restarted_empty_is_rebuilt_from_the_ledger(settings, upstream, redis_server):
    async with replicas(settings, n=1) as group:
        app, client = group[0]
        key, value = await create_key(
            client, rate_limit={"request_max_limit": 12, "request_reset_duration": "1h"}
        )
        assert statuses(await spread(group, value, 8)) == {200: 8}
        await quiet(group)
        redis_server.stop()
        refused = await chat(client, value)
        assert refused.status_code == 503, refused.text
        assert "Redis" in refused.json()["error"]["message"]
        redis_server.start()
        # The ledger says 8 of 12 were used this hour: 4 more pass, then the limit holds.
        again = await spread(group, value, 10)
        assert statuses(again) == {200: 4, 429: 6}, [r.text for r in again]
        await quiet(group)
        await assert_counters_match_ledger(client, app, "virtual-keys", key["id"])


# --- Redis unreachable: keys fail closed (503) or open (local meter, merged back) --------


async def fallback_admissions(client: httpx.AsyncClient) -> float:
    text = (await client.get("/metrics")).text
    for line in text.splitlines():
        if line.startswith("tollhouse_meter_fallback_admissions_total "):
            return float(line.split()[1])
    return 0.0


async def two_keys(client: httpx.AsyncClient) -> tuple[dict, str, dict, str]:
    rate = {"request_max_limit": 1000, "request_reset_duration": "1h"}
    budget = {"max_limit": 10, "reset_duration": "1d"}
    opened, open_value = await create_key(
        client, name="open", on_meter_failure="open", budget=budget, rate_limit=rate
    )
    closed, closed_value = await create_key(client, name="closed", budget=budget, rate_limit=rate)
    assert opened["on_meter_failure"] == "open"
    assert closed["on_meter_failure"] is None  # the operator default: closed
    return opened, open_value, closed, closed_value


async def test_redis_down_fails_closed_or_open_and_merges_back(settings, upstream, redis_server):
    async with replicas(settings, n=1) as group:
        app, client = group[0]
        opened, open_value, closed, closed_value = await two_keys(client)
        assert statuses(await spread(group, open_value, 5)) == {200: 5}
        await quiet(group)
        redis_server.stop()

        closed_refused = await chat(client, closed_value)
        assert closed_refused.status_code == 503
        assert "fails closed" in closed_refused.json()["error"]["message"]
        assert statuses(await spread(group, open_value, 6)) == {200: 6}
        assert await fallback_admissions(client) == 6

        redis_server.start()  # empty: the counters are rebuilt and the fallback merged
        assert statuses(await spread(group, open_value, 4)) == {200: 4}
        await quiet(group)
        rows = await assert_counters_match_ledger(client, app, "virtual-keys", opened["id"])
        assert len(rows) == 15


async def test_a_paused_redis_gets_the_fallback_usage_exactly_once(
    make_settings, redis_url, redis_server, upstream
):
    settings = make_settings(allow_anonymous=False, redis_url=redis_url, redis_timeout_s=0.3)
    async with replicas(settings, n=1) as group:
        app, client = group[0]
        opened, open_value, _, _ = await two_keys(client)
        assert statuses(await spread(group, open_value, 3)) == {200: 3}
        await quiet(group)
        with redis_server.client() as admin_client:
            admin_client.execute_command("CLIENT", "PAUSE", "1500", "ALL")
        # Redis keeps its data but answers nothing for 1.5 s: these time out and fail open.
        assert statuses(await spread(group, open_value, 4)) == {200: 4}
        assert await fallback_admissions(client) == 4
        await asyncio.sleep(1.6)
        await quiet(group)
        rows = await assert_counters_match_ledger(client, app, "virtual-keys", opened["id"])
        assert len(rows) == 7


async def test_on_meter_failure_is_validated_merged_and_inherited(settings, upstream):
    async with replicas(settings, n=1) as group:
        app, client = group[0]
        bad = await client.post(
            "/api/governance/virtual-keys", json={"name": "k", "on_meter_failure": "maybe"}
        )
        assert bad.status_code == 400, bad.text
        team = await create_team(client, on_meter_failure="open")
        assert team["on_meter_failure"] == "open"
        key, _ = await create_key(client, team_id=team["id"])
        assert key["on_meter_failure"] is None
        info = app.services.admission.snapshot.keys_by_id[key["id"]]
        assert info.on_meter_failure == "open"  # inherited from the team
        response = await client.put(
            f"/api/governance/virtual-keys/{key['id']}", json={"on_meter_failure": "closed"}
        )
        assert response.json()["virtual_key"]["on_meter_failure"] == "closed"
        assert app.services.admission.snapshot.keys_by_id[key["id"]].on_meter_failure == "closed"
        response = await client.put(f"/api/governance/teams/{team['id']}", json={})
        assert response.json()["team"]["on_meter_failure"] == "open"  # {} changes nothing


async def test_a_key_without_limits_needs_no_redis(settings, upstream, redis_server):
    async with replicas(settings, n=1) as group:
        app, client = group[0]
        key, value = await create_key(client)
        assert (await chat(client, value)).status_code == 200
        redis_server.stop()
        try:
            assert (await chat(client, value)).status_code == 200  # nothing to check
        finally:
            redis_server.start()
        rows = await records(client, app)
        assert [r["key_id"] for r in rows] == [key["id"], key["id"]]


async def test_a_budget_added_while_a_request_is_in_flight_still_matches_the_ledger(
    settings, upstream
):
    """The in-flight request reserved on no counter of the new budget; its settle still
    counts on it, once, whether Redis built the counter before or after its record."""
    async with replicas(settings) as group:
        app, client = group[0]
        team = await create_team(client)
        _, value = await create_key(client, team_id=team["id"])
        await group[1][0].services.admission.reload()
        scenario(upstream, latency_ms=400)
        slow = asyncio.create_task(chat(client, value))
        await asyncio.sleep(0.1)  # admitted, waiting on the upstream
        budget = {"budget": {"max_limit": 1, "reset_duration": "1d"}}
        await admin(client, "PUT", f"/teams/{team['id']}", budget)
        assert (await slow).status_code == 200
        await group[1][0].services.admission.reload()
        assert (await chat(group[1][1], value)).status_code == 200
        await quiet(group)
        for _, other in group:
            rows = await assert_counters_match_ledger(other, app, "teams", team["id"])
            assert len(rows) == 2


async def test_a_replica_started_while_redis_is_down_sends_its_settles_once_it_is_back(
    settings, upstream, redis_server
):
    budget = {"max_limit": 10, "reset_duration": "1d"}
    async with replicas(settings, n=1) as group:
        key, value = await create_key(group[0][1], on_meter_failure="open", budget=budget)
    redis_server.stop()
    try:
        async with replicas(settings, n=1) as group:
            app, client = group[0]
            assert (await chat(client, value)).status_code == 200  # on the local meter
            redis_server.start()
            assert statuses(await spread(group, value, 3)) == {200: 3}
            await quiet(group)
            rows = await assert_counters_match_ledger(client, app, "virtual-keys", key["id"])
            assert len(rows) == 4
    finally:
        if not redis_server.running:
            redis_server.start()
