"""Property: whatever records the recorder writes — costs to the nano-dollar, any latency,
any hour, scopes present or not, in batches of any size, some twice — the roll-ups'
totals and series are the Python sums of those records, exactly; on SQLite and on
Postgres."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete
from tests.ledger.records import usage_record
from tests.ledger.sums import TABLES, assert_rolled_up
from tests.ledger.test_rollup_reads import (
    DAY0,
    assert_totals,
    expected_series,
    expected_totals,
)
from tests.ledger.test_rollups import record

from tollhouse.ledger.models import LATENCY_BOUNDS_MS, usage_records
from tollhouse.ledger.rollups import COLUMN, RollupFilter, every_projection, series, snap, totals

HOURS = 80  # records over a little more than three UTC days

scopes = st.sampled_from([None, "a", "b"])
latencies = st.one_of(
    st.sampled_from([float(b) for b in LATENCY_BOUNDS_MS]),  # on a bound
    st.floats(min_value=0, max_value=2e5, allow_nan=False),
)
records = st.lists(
    st.fixed_dictionaries(
        {
            "created_at": st.integers(0, HOURS * 3600 * 10**6 - 1).map(
                lambda us: DAY0 + timedelta(microseconds=us)
            ),
            "customer_id": scopes,
            "team_id": scopes,
            "key_id": st.sampled_from([None, "vk_1", "vk_2", "vk_3"]),
            "model": st.sampled_from(["m1", "m2"]),
            "provider": st.sampled_from(["openai", "anthropic"]),
            "status": st.sampled_from(["success", "error", "cancelled"]),
            "prompt_tokens": st.integers(0, 10**6),
            "completion_tokens": st.integers(0, 10**6),
            "cost": st.decimals(min_value=0, max_value=1000, places=9, allow_nan=False),
            "latency_ms": latencies,
            "streamed": st.booleans(),
        }
    ),
    max_size=60,
)
queries = st.tuples(
    st.integers(0, HOURS),  # since, in hours from DAY0
    st.integers(0, HOURS),  # length
    st.sampled_from([None, *COLUMN]),
    st.fixed_dictionaries(
        {},
        optional={
            "customer_id": st.sampled_from(["", "a", "b"]),
            "key_ids": st.lists(st.sampled_from(["", "vk_1", "vk_2"]), max_size=2).map(tuple),
            "model": st.sampled_from(["m1", "m2"]),
        },
    ),
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    fields=records,
    batch_size=st.integers(1, 25),
    again=st.lists(st.integers(0, 59), max_size=5),
    query=queries,
)
async def test_totals_and_series_are_the_sums_of_the_records(
    engine, fields, batch_size, again, query
):
    async with engine.begin() as conn:  # each example on empty tables
        for table in (usage_records, *TABLES.values(), *every_projection()):
            await conn.execute(delete(table))
    written = [usage_record(id=f"req_{i:03d}", **f) for i, f in enumerate(fields)]
    replayed = [written[i] for i in again if i < len(written)]  # counted once
    await record(engine, [*written, *replayed], batch_size=batch_size)
    assert await assert_rolled_up(engine) == len(written)

    start, hours, group, filters = query
    since, until = DAY0 + timedelta(hours=start), DAY0 + timedelta(hours=start + hours)
    async with engine.connect() as conn:
        for grain in ("hour", "day"):
            where = RollupFilter(*snap(since, until, grain), grain, **filters)
            summed = await totals(conn, where)
            assert_totals(summed, expected_totals(written, where))
            found = await series(conn, where, group)
            assert found == expected_series(written, where, group)
            assert sum((p.cost for p in found), Decimal(0)) == summed.cost
            assert sum(p.requests for p in found) == summed.requests
