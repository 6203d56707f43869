"""300 parallel requests on an account that can pay for a handful: never below
``−overdraft_limit``, and the journal equals the usage ledger to the last nano-dollar —
in one process (SQLite, then Postgres) and on two replicas sharing Postgres and Redis.

A queued ``latency_ms`` scenario keeps every admitted request in flight while the rest
of the burst is admitted, so reservations really overlap.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import func, select
from tests.credits.helpers import balance, grant, open_account
from tests.governance.helpers import (
    chat,
    create_customer,
    create_key,
    records,
    running,
    scenario,
    usd,
    worst_case_nanos,
)

from tollhouse.credits import service
from tollhouse.credits.models import credit_legs, credit_transactions

BURST = 300


async def journal_matches_ledger(app: Any, client: Any, account_id: str) -> Decimal:
    """Posts = usage records of the account, legs balanced, projections = journal;
    returns what the records cost."""
    rows = await records(client, app, credit_account_id=account_id)
    spent = sum((r["cost"] for r in rows), Decimal(0))
    async with app.services.engine.connect() as conn:
        funded, posted = await service.journal_totals(conn, account_id)
        account = await service.get_account(conn, account_id)
        t = credit_transactions.c
        posts = (
            await conn.execute(
                select(func.count()).where(t.account_id == account_id, t.kind == "post")
            )
        ).scalar_one()
        unbalanced = (
            await conn.execute(
                select(credit_legs.c.transaction_seq)
                .group_by(credit_legs.c.transaction_seq)
                .having(func.sum(credit_legs.c.amount) != 0)
            )
        ).all()
    assert posted == spent, (posted, spent)
    # One post per batch the recorder wrote; every paid record names its post.
    paid = [r for r in rows if r["cost"]]
    assert all(r["credit_post"] for r in paid)
    assert posts == len({r["credit_post"] for r in paid})
    assert (account.funded, account.spent) == (funded, posted)
    assert unbalanced == []
    return spent


async def burst(clients: list[Any], value: str) -> Counter[int]:
    return await burst_of(clients, value, BURST)


@pytest.mark.parametrize("overdraft_requests", [0, 2])
async def test_one_process_never_overdraws(
    make_settings, both_stores, upstream, overdraft_requests
):
    settings = make_settings(allow_anonymous=False, **both_stores)
    async with running(settings) as (app, client):
        customer = await create_customer(client)
        _, value = await create_key(client, customer_id=customer["id"])
        overdraft = usd(overdraft_requests * worst_case_nanos())
        account = await open_account(client, "customer", customer["id"], overdraft_limit=overdraft)
        funding = usd(5 * worst_case_nanos())
        await grant(client, account["id"], str(funding))
        scenario(upstream, latency_ms=40, count=BURST)

        seen = await burst([client], value)

        assert set(seen) <= {200, 402}, seen
        assert seen[200] == 5 + overdraft_requests
        left = await balance(client, account["id"])
        assert left["available"] >= -overdraft and left["reserved"] == 0
        spent = await journal_matches_ledger(app, client, account["id"])
        assert left["total"] == funding - spent


async def test_two_replicas_never_overdraw(make_settings, pg_url, redis_url, upstream):
    settings = make_settings(allow_anonymous=False, database_url=pg_url, redis_url=redis_url)
    async with contextlib.AsyncExitStack() as stack:
        group = [await stack.enter_async_context(running(settings)) for _ in range(2)]
        app, client = group[0]
        customer = await create_customer(client)
        _, value = await create_key(client, customer_id=customer["id"])
        account = await open_account(client, "customer", customer["id"])
        funding = usd(5 * worst_case_nanos())
        await grant(client, account["id"], str(funding))
        await group[1][0].services.admission.reload()
        scenario(upstream, latency_ms=40, count=BURST)

        seen = await burst([c for _, c in group], value)

        assert set(seen) <= {200, 402}, seen
        # At least the five the funding covers at their worst case; a sixth when a settle
        # (actual cost below the worst case) lands on one replica before the other's last
        # reservations — two processes, no common clock. Never more than it can pay for:
        # the balance below stays at or above zero, the journal equal to the ledger.
        assert seen[200] >= 5
        for replica, _ in group:
            for _ in range(500):
                if replica.services.admission.meter.pending == 0:
                    break
                await asyncio.sleep(0.01)
            await replica.services.recorder.flush()
        for _, other in group:
            left = await balance(other, account["id"])
            assert left["available"] >= 0 and left["reserved"] == 0
        spent = await journal_matches_ledger(app, client, account["id"])
        assert spent <= funding
        assert (await balance(client, account["id"]))["total"] == funding - spent


async def test_credit_taken_away_on_one_replica_is_gone_on_the_other_at_once(
    make_settings, pg_url, redis_url, upstream
):
    # The second replica never polls for changes during the test: only the limit the
    # first one published to Redis can stop it.
    settings = make_settings(
        allow_anonymous=False,
        database_url=pg_url,
        redis_url=redis_url,
        governance_poll_interval_s=3600,
    )
    async with contextlib.AsyncExitStack() as stack:
        group = [await stack.enter_async_context(running(settings)) for _ in range(2)]
        (_, first), (second_app, second) = group
        customer = await create_customer(first)
        _, value = await create_key(first, customer_id=customer["id"])
        account = await open_account(first, "customer", customer["id"])
        await grant(first, account["id"], "1")
        await second_app.services.admission.reload()
        assert (await chat(second, value)).status_code == 200

        await grant(first, account["id"], "-1", category="adjustment")

        refused = await chat(second, value)
        assert refused.status_code == 402, refused.text
        assert (await chat(first, value)).status_code == 402


async def test_an_account_is_rebuilt_exactly_when_redis_loses_its_data(
    make_settings, pg_url, redis_url, redis_server, upstream
):
    settings = make_settings(allow_anonymous=False, database_url=pg_url, redis_url=redis_url)
    async with contextlib.AsyncExitStack() as stack:
        group = [await stack.enter_async_context(running(settings)) for _ in range(2)]
        app, client = group[0]
        customer = await create_customer(client)
        _, value = await create_key(client, customer_id=customer["id"])
        account = await open_account(client, "customer", customer["id"])
        await grant(client, account["id"], "1")
        await group[1][0].services.admission.reload()
        clients = [c for _, c in group]
        assert (await burst_of(clients, value, 30)) == {200: 30}

        # In flight while Redis forgets everything: their settles land on rebuilt counters.
        scenario(upstream, latency_ms=150, count=20)
        in_flight = asyncio.ensure_future(burst_of(clients, value, 20))
        await asyncio.sleep(0.05)
        redis_server.flush()
        assert (await burst_of(clients, value, 20)) == {200: 20}
        assert (await in_flight) == {200: 20}

        for replica, _ in group:
            for _ in range(500):
                if replica.services.admission.meter.pending == 0:
                    break
                await asyncio.sleep(0.01)
            await replica.services.recorder.flush()
        spent = await journal_matches_ledger(app, client, account["id"])
        assert len(await records(client, app, credit_account_id=account["id"])) == 70
        for _, other in group:
            left = await balance(other, account["id"])
            assert left == {"total": 1 - spent, "reserved": 0, "available": 1 - spent}


async def burst_of(clients: list[Any], value: str, n: int) -> Counter[int]:
    calls = (chat(clients[i % len(clients)], value) for i in range(n))
    return Counter(r.status_code for r in await asyncio.gather(*calls))
