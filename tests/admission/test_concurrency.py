"""The acceptance tests of admission (docs/governance.md): hundreds of parallel
requests, zero overspend, exact request limits, and the concurrency cap, on SQLite and
on Postgres.

Requests run concurrently through the in-process app (``asyncio.gather``): the gateway
awaits the real dev upstream over loopback, and a queued ``latency_ms`` scenario keeps
every admitted request in flight while the rest of the burst is being admitted, so
reservations really overlap. "fresh" bursts hit a key that has served nothing yet,
"used" ones a key that has settled a request first; and one burst arrives while a budget
change has the counter rebuilt from a large ledger.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from datetime import UTC, datetime
from decimal import Decimal

import httpx
import pytest
from tests.governance.helpers import (
    actual_nanos,
    admin,
    assert_counters_match_ledger,
    chat,
    counters,
    create_customer,
    create_key,
    create_team,
    fill_ledger,
    get_entity,
    records,
    scenario,
    upstream_stats,
    usd,
    worst_case_nanos,
)

BIG_BUDGET = {"max_limit": Decimal(1000), "reset_duration": "1d"}
BIG_RATE = {"request_max_limit": 100_000, "request_reset_duration": "1d"}


@pytest.fixture
def settings(make_settings, both_stores):
    return make_settings(allow_anonymous=False, **both_stores)


async def burst(client: httpx.AsyncClient, value: str, n: int, **body) -> list[httpx.Response]:
    return list(await asyncio.gather(*(chat(client, value, **body) for _ in range(n))))


def statuses(responses: list[httpx.Response]) -> Counter[int]:
    return Counter(r.status_code for r in responses)


def codes(responses: list[httpx.Response]) -> Counter[str]:
    return Counter(r.json()["error"]["code"] for r in responses if r.status_code != 200)


async def no_capacity_held(client: httpx.AsyncClient) -> None:
    for counter in await counters(client):
        assert Decimal(str(counter["reserved"])) == 0, counter


# --- budgets: 300 parallel requests, a budget that admits a handful -----------------------


@pytest.mark.parametrize("ratio", [Decimal(1), Decimal("1.1")])
@pytest.mark.parametrize("used", [False, True], ids=["fresh", "used"])
async def test_300_parallel_requests_never_overspend(gateway, app, upstream, ratio, used):
    customer = await create_customer(gateway, budget=BIG_BUDGET, rate_limit=BIG_RATE)
    team = await create_team(gateway, customer_id=customer["id"], budget=BIG_BUDGET)
    # About five worst cases fit; each request actually costs ~70 % of its worst case.
    max_limit = usd(5 * worst_case_nanos())
    budget = {"max_limit": max_limit, "reset_duration": "1d", "hard_limit_ratio": ratio}
    key, value = await create_key(gateway, team_id=team["id"], budget=budget)
    if used:
        assert (await chat(gateway, value)).status_code == 200
    scenario(upstream, latency_ms=40, count=300)

    responses = await burst(gateway, value, 300)

    seen = statuses(responses)
    assert set(seen) <= {200, 402}, seen
    assert set(codes(responses)) <= {"budget_exceeded"}
    rows = await assert_counters_match_ledger(gateway, app, "virtual-keys", key["id"])
    spent = sum((Decimal(r["cost"]) for r in rows), Decimal(0))
    assert spent <= max_limit * ratio, f"overspent: {spent} > {max_limit * ratio}"
    assert len(rows) == seen[200] + used
    # Every worst case that fitted was admitted (5 of them fit in max_limit × ratio).
    assert len(rows) >= 5
    await assert_counters_match_ledger(gateway, app, "teams", team["id"])
    await assert_counters_match_ledger(gateway, app, "customers", customer["id"])
    assert len(await records(gateway, app)) == len(rows)


async def test_parallel_streams_never_overspend(gateway, app, upstream):
    max_limit = usd(4 * worst_case_nanos())
    key, value = await create_key(gateway, budget={"max_limit": max_limit, "reset_duration": "1d"})
    scenario(upstream, chunk_delay_ms=2, count=100)
    responses = await burst(gateway, value, 100, stream=True)
    seen = statuses(responses)
    assert set(seen) <= {200, 402}
    for response in responses:
        if response.status_code == 402:
            assert response.headers["content-type"].startswith("application/json")
    rows = await assert_counters_match_ledger(gateway, app, "virtual-keys", key["id"])
    assert len(rows) == seen[200]
    assert sum(Decimal(r["cost"]) for r in rows) == usd(seen[200] * actual_nanos())
    assert usd(seen[200] * actual_nanos()) <= max_limit


# --- request limits: 50 parallel against a limit of 10 ------------------------------------


async def key_limited_on(
    client: httpx.AsyncClient, scope: str, rate: dict[str, object]
) -> tuple[dict[str, object], str, str, str]:
    """A key whose request limit sits on ``scope``: ``(key, value, owner kind, owner id)``."""
    if scope == "key":
        key, value = await create_key(client, rate_limit=rate)
        return key, value, "virtual-keys", str(key["id"])
    if scope == "team":
        team = await create_team(client, rate_limit=rate)
        key, value = await create_key(client, team_id=team["id"])
        return key, value, "teams", str(team["id"])
    customer = await create_customer(client, rate_limit=rate)
    team = await create_team(client, customer_id=customer["id"])
    key, value = await create_key(client, team_id=team["id"])
    return key, value, "customers", str(customer["id"])


@pytest.mark.parametrize("scope", ["key", "team", "customer"])
@pytest.mark.parametrize("used", [False, True], ids=["fresh", "used"])
async def test_exactly_the_request_limit_succeeds(gateway, app, upstream, scope, used):
    rate = {"request_max_limit": 10, "request_reset_duration": "1h"}
    key, value, owner, owner_id = await key_limited_on(gateway, scope, rate)
    if used:
        # One request first, so the burst finds its counters already built.
        assert (await chat(gateway, value)).status_code == 200
    scenario(upstream, latency_ms=30, count=50)

    responses = await burst(gateway, value, 50)

    seen = statuses(responses)
    assert seen == {200: 10 - used, 429: 40 + used}, seen
    assert codes(responses) == {"rate_limit_exceeded": 40 + used}
    refused = next(r for r in responses if r.status_code == 429)
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.headers["x-ratelimit-limit-requests"] == "10"
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert f"{scope} '" in refused.json()["error"]["message"]
    assert owner_id in refused.json()["error"]["message"]
    assert len(await records(gateway, app, key_id=str(key["id"]))) == 10
    await assert_counters_match_ledger(gateway, app, owner, owner_id)
    entity = await get_entity(gateway, owner, owner_id)
    assert entity["rate_limit"]["request_current_usage"] == 10


async def test_a_team_limit_is_shared_by_all_its_keys(gateway, app, upstream):
    team = await create_team(
        gateway, rate_limit={"request_max_limit": 10, "request_reset_duration": "1h"}
    )
    values = [(await create_key(gateway, name=f"k{i}", team_id=team["id"]))[1] for i in range(5)]
    scenario(upstream, latency_ms=30, count=50)
    responses = await asyncio.gather(*(chat(gateway, values[i % 5]) for i in range(50)))
    assert statuses(list(responses)) == {200: 10, 429: 40}
    await assert_counters_match_ledger(gateway, app, "teams", team["id"])


# --- concurrency: max_parallel_requests ---------------------------------------------------


@contextlib.asynccontextmanager
async def watch_in_flight(upstream):
    """Samples the dev upstream's ``in_flight`` while the block runs; yields the samples."""
    samples: list[int] = []
    done = asyncio.Event()

    async def sample() -> None:
        async with httpx.AsyncClient(base_url=upstream.url) as client:
            while not done.is_set():
                samples.append((await client.get("/_dev/stats")).json()["in_flight"])
                await asyncio.sleep(0.003)

    task = asyncio.create_task(sample())
    try:
        yield samples
    finally:
        done.set()
        await task


async def upstream_idle(upstream) -> None:
    for _ in range(500):
        if upstream_stats(upstream)["in_flight"] == 0:
            return
        await asyncio.sleep(0.002)
    raise AssertionError("the upstream never went idle")


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streaming"])
async def test_never_more_than_max_parallel_requests_in_flight(gateway, app, upstream, stream):
    key, value = await create_key(gateway, max_parallel_requests=3)
    if stream:
        scenario(upstream, chunk_delay_ms=15, count=20)
    else:
        scenario(upstream, latency_ms=250, count=20)

    async with watch_in_flight(upstream) as samples:
        responses = await burst(gateway, value, 20, stream=stream)

    seen = statuses(responses)
    assert seen == {200: 3, 429: 17}, seen
    assert codes(responses) == {"parallel_limit_exceeded": 17}
    refused = next(r for r in responses if r.status_code == 429)
    assert refused.headers["retry-after"] == "1"
    assert "3 of 3" in refused.json()["error"]["message"]
    assert samples and max(samples) <= 3
    assert 3 in samples  # the three admitted really overlapped
    await no_capacity_held(gateway)
    # Slots come back when requests end: the next three pass.
    assert statuses(await burst(gateway, value, 3, stream=stream)) == {200: 3}
    assert len(await records(gateway, app, key_id=key["id"])) == 6


async def test_mixed_streaming_and_plain_requests_share_the_parallel_cap(gateway, upstream):
    _, value = await create_key(gateway, max_parallel_requests=3)
    scenario(upstream, latency_ms=150, count=30)
    scenario(upstream, chunk_delay_ms=10, count=30)

    async def one(i: int) -> httpx.Response:
        return await chat(gateway, value, stream=i % 2 == 0)

    for _ in range(3):
        async with watch_in_flight(upstream) as samples:
            responses = await asyncio.gather(*(one(i) for i in range(10)))
        assert statuses(list(responses)) == {200: 3, 429: 7}
        assert samples and max(samples) <= 3
        # The upstream finishes its side of a reply a moment after the gateway has read
        # it all; start the next round when it has, so rounds are measured apart.
        await upstream_idle(upstream)
    assert upstream_stats(upstream)["in_flight"] == 0
    await no_capacity_held(gateway)


# --- a burst that arrives while counters are being built ----------------------------------


async def test_a_burst_while_a_budget_changes_never_overspends(gateway, app):
    """An operator changes a budget while traffic flows: its counter is rebuilt from the
    ledger while requests keep arriving. On a key with a day's worth of records that sum
    takes long enough for the first admitted requests to settle before every request
    that started its own rebuild has finished it."""
    max_limit = usd(5 * worst_case_nanos())
    meter = app.services.admission.meter
    for attempt in range(4):
        key, value = await create_key(
            gateway, name=f"busy-{attempt}", budget={"max_limit": 1, "reset_duration": "1d"}
        )
        await fill_ledger(app, str(key["id"]), 30_000, datetime.now(UTC))
        counter_id = ("budget", key["budget"]["id"])
        body = {"budget": {"max_limit": max_limit}}
        change = asyncio.create_task(admin(gateway, "PUT", f"/virtual-keys/{key['id']}", body))
        # Until the change drops the counter for a rebuild (no event says so).
        while counter_id in meter.counters and not change.done():  # noqa: ASYNC110
            await asyncio.sleep(0)

        responses = await burst(gateway, value, 300)
        await change

        assert set(statuses(responses)) <= {200, 402}
        rows = await records(gateway, app, key_id=str(key["id"]))
        spent = sum((Decimal(r["cost"]) for r in rows if r["id"].startswith("req_")), Decimal(0))
        entity = await get_entity(gateway, "virtual-keys", str(key["id"]))
        assert entity["budget"]["current_usage"] == spent, "counter and ledger disagree"
        assert spent <= max_limit, f"overspent: {spent} > {max_limit}"
