"""``spend_by``: requests, tokens and exact spend per key, team, customer, model, day."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import timedelta
from decimal import Decimal

import pytest
from tests.ledger.records import T0, usage_record

from tollhouse.ledger import UsageRecorder
from tollhouse.ledger.service import SpendRow, UsageFilter, spend_by
from tollhouse.ops.metrics import Metrics

GROUP_FIELDS = {
    "key": "key_id",
    "team": "team_id",
    "customer": "customer_id",
    "model": "model",
    "provider": "provider",
}


def random_records(n: int, seed: int = 7):
    rng = random.Random(seed)
    records = []
    for i in range(n):
        records.append(
            usage_record(
                id=f"req_{i:05d}",
                created_at=T0 + timedelta(hours=rng.randrange(0, 24 * 5)),
                key_id=rng.choice(["k1", "k2", "k3", None]),
                team_id=rng.choice(["t1", "t2", None]),
                customer_id=rng.choice(["c1", None]),
                provider=rng.choice(["openai", "anthropic"]),
                model=rng.choice(["gpt-4o-mini", "gpt-4o", "claude-haiku-4-5"]),
                prompt_tokens=rng.randrange(0, 100_000),
                completion_tokens=rng.randrange(0, 10_000),
                # Whole nano-dollars, from one nano to thousands of dollars.
                cost=Decimal(rng.randrange(0, 10**13)) / Decimal(10**9),
            )
        )
    return records


def expected_spend(records, key) -> dict[str, tuple[int, int, int, Decimal]]:
    groups: dict[str, list] = defaultdict(list)
    for record in records:
        value = key(record)
        groups["-" if value is None else value].append(record)
    return {
        name: (
            len(rs),
            sum(r.prompt_tokens for r in rs),
            sum(r.completion_tokens for r in rs),
            sum((r.cost for r in rs), Decimal(0)),
        )
        for name, rs in groups.items()
    }


def as_dict(rows: list[SpendRow]) -> dict[str, tuple[int, int, int, Decimal]]:
    return {
        row.group: (row.requests, row.prompt_tokens, row.completion_tokens, row.cost)
        for row in rows
    }


@pytest.fixture
async def ledger(engine):
    records = random_records(300)
    recorder = UsageRecorder(engine, Metrics(), batch_size=128)
    for record in records:
        recorder.add(record)
    await recorder.flush()
    return records


@pytest.mark.parametrize("group", sorted(GROUP_FIELDS))
async def test_spend_by_field_is_exact(engine, ledger, group):
    async with engine.connect() as conn:
        rows = await spend_by(conn, group, UsageFilter())
    field = GROUP_FIELDS[group]
    assert as_dict(rows) == expected_spend(ledger, lambda r: getattr(r, field))
    for row in rows:
        assert isinstance(row.cost, Decimal)


async def test_spend_by_day_is_exact(engine, ledger):
    async with engine.connect() as conn:
        rows = await spend_by(conn, "day", UsageFilter())
    assert as_dict(rows) == expected_spend(ledger, lambda r: r.created_at.date().isoformat())
    assert [row.group for row in rows] == sorted(row.group for row in rows)


async def test_spend_total_equals_sum_of_records(engine, ledger):
    async with engine.connect() as conn:
        rows = await spend_by(conn, "model", UsageFilter())
    assert sum((row.cost for row in rows), Decimal(0)) == sum((r.cost for r in ledger), Decimal(0))
    assert sum(row.requests for row in rows) == len(ledger)


async def test_spend_with_filters(engine, ledger):
    since, until = T0 + timedelta(days=1), T0 + timedelta(days=3)
    where = UsageFilter(team_id="t1", since=since, until=until)
    async with engine.connect() as conn:
        rows = await spend_by(conn, "key", where)
    chosen = [r for r in ledger if r.team_id == "t1" and since <= r.created_at < until]
    assert chosen
    assert as_dict(rows) == expected_spend(chosen, lambda r: r.key_id)


async def test_spend_small_exact_example(engine):
    recorder = UsageRecorder(engine, Metrics())
    for i, cost in enumerate(["0.0000102", "1.5", "0.000000001"]):
        recorder.add(usage_record(id=f"r{i}", cost=Decimal(cost), key_id="k"))
    await recorder.flush()
    async with engine.connect() as conn:
        (row,) = await spend_by(conn, "key", UsageFilter())
    assert row == SpendRow("k", 3, 12, 48, Decimal("1.500010201"))


async def test_spend_of_an_empty_ledger(engine):
    async with engine.connect() as conn:
        assert await spend_by(conn, "model", UsageFilter()) == []
