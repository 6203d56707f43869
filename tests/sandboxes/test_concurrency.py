"""Zero double allocations at any concurrency, on SQLite and Postgres, on one server and
across two replicas sharing a Postgres: 500 parallel asks by distinct tracks for a pool of
50 give exactly 50 leases and 450 ``pool_exhausted``, no sandbox twice; 100 parallel
asks by one track give it one sandbox."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from tests.sandboxes.helpers import allocate, new_token, seed
from tests.support import JSON_WRITES, decode

from tollhouse.app import create_app


@asynccontextmanager
async def server(settings) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(
            transport=transport, base_url="http://127.0.0.1", headers=JSON_WRITES
        ) as client:
            yield client


def settled(responses: list[httpx.Response]) -> tuple[Counter[int], list[str]]:
    codes = Counter(r.status_code for r in responses)
    leased = [decode(r)["sandbox"]["id"] for r in responses if r.status_code == 201]
    return codes, leased


async def test_500_tracks_for_50_sandboxes(make_settings, db_url):
    settings = make_settings(database_url=db_url, sandbox_track_requests_per_minute=0)
    async with server(settings) as client:
        token = await new_token(client)
        pool = set(await seed(client, 50))
        answers = await asyncio.gather(*(allocate(client, token, f"track-{n}") for n in range(500)))
        codes, leased = settled(answers)
        assert codes == {201: 50, 503: 450}, codes
        assert len(set(leased)) == 50 and set(leased) == pool  # none twice, all of them
        owners = [decode(r)["sandbox"]["track_id"] for r in answers if r.status_code == 201]
        assert len(set(owners)) == 50


async def test_100_asks_by_one_track_lease_one_sandbox(make_settings, db_url):
    settings = make_settings(database_url=db_url, sandbox_track_requests_per_minute=0)
    async with server(settings) as client:
        token = await new_token(client)
        await seed(client, 20)
        answers = await asyncio.gather(*(allocate(client, token, "same") for _ in range(100)))
        codes = Counter(r.status_code for r in answers)
        assert codes == {201: 1, 200: 99}, codes
        assert len({decode(r)["sandbox"]["id"] for r in answers}) == 1
        stats = decode(await client.get("/api/sandboxes/stats"))
        assert stats["by_status"]["allocated"] == 1 and stats["by_status"]["available"] == 19


async def test_two_replicas_never_lease_a_sandbox_twice(make_settings, pg_url):
    settings = make_settings(database_url=pg_url, sandbox_track_requests_per_minute=0)
    async with server(settings) as one, server(settings) as two:
        token = await new_token(one)
        pool = set(await seed(one, 50))
        await asyncio.sleep(settings.governance_poll_interval_s * 2.5)  # two learns the token
        asks = [
            allocate(one if n % 2 else two, token, f"track-{n % 250}") for n in range(500)
        ]  # every track asks twice, once of each replica
        answers = await asyncio.gather(*asks)
        codes, leased = settled(answers)
        assert codes[201] == 50 and len(set(leased)) == 50 and set(leased) == pool, codes
        assert codes[200] + codes[503] == 450, codes
        holders = Counter(
            decode(r)["sandbox"]["track_id"] for r in answers if r.status_code in (200, 201)
        )
        by_sandbox: dict[str, set[str]] = {}
        for r in answers:
            if r.status_code in (200, 201):
                sandbox = decode(r)["sandbox"]
                by_sandbox.setdefault(sandbox["id"], set()).add(sandbox["track_id"])
        assert all(len(tracks) == 1 for tracks in by_sandbox.values())  # one track each
        assert len(holders) == 50
