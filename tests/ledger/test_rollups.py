"""The roll-ups, written with the ledger by the real recorder: always the group-by of the
records, whatever batches, duplicates, replays and refusals brought; on SQLite and on
Postgres. Expected rows are computed from the records in ``sums.py``, not by the code
under test."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import func, select
from tests.ledger.records import usage_record
from tests.ledger.sums import assert_rolled_up, grouped, ledger, stored
from tests.support import engine_for

from tollhouse.db.snapshot import read_snapshot
from tollhouse.ledger import UsageRecord, UsageRecorder
from tollhouse.ledger.models import LATENCY_BOUNDS_MS, usage_hourly
from tollhouse.ledger.recorder import inserted
from tollhouse.ledger.rollups import OVERFLOW, latency_bucket, roll_up
from tollhouse.ledger.spool import Spool
from tollhouse.ledger.verify import verify_rollups
from tollhouse.ops.metrics import Metrics

T0 = datetime(2026, 11, 21, 22, 10, tzinfo=UTC)  # two hours before a UTC midnight
SCOPES = [
    (None, None, None),
    ("cus_a", None, None),
    ("cus_a", "team_1", "vk_1"),
    ("cus_a", "team_1", "vk_2"),
    ("cus_b", "team_2", "vk_3"),
    (None, None, "vk_4"),
]
LATENCIES = [0.0, 0.5, 1.0, 1.000001, 7.0, 99.9, 100.0, 1499.0, 120000.0, 120000.5, 3.6e6]


def varied(n: int, prefix: str = "req", start: datetime = T0) -> list[UsageRecord]:
    """``n`` records over about five hours across a UTC midnight, every scope (with
    none), two models and providers, every status, latencies on and between the
    histogram's bounds and past the last, costs down to the nano-dollar."""
    records = []
    for i in range(n):
        customer, team, key = SCOPES[i % len(SCOPES)]
        records.append(
            usage_record(
                id=f"{prefix}_{i:05d}",
                created_at=start + timedelta(minutes=7 * i, microseconds=i),
                customer_id=customer,
                team_id=team,
                key_id=key,
                model=("gpt-4o-mini", "claude-3-5-haiku")[i % 2],
                provider=("openai", "anthropic", "openrouter")[i % 3],
                status=("success", "success", "error", "cancelled", "refused")[i % 5],
                prompt_tokens=i * 3,
                completion_tokens=i % 17,
                cached_tokens=i % 5,
                cost=Decimal(i * 1_234_567 + 1) / 10**9,
                latency_ms=LATENCIES[i % len(LATENCIES)],
                streamed=i % 3 == 0,
            )
        )
    return records


async def record(engine, records, **options) -> UsageRecorder:
    recorder = UsageRecorder(engine, Metrics(), **options)
    for one in records:
        recorder.add(one)
    await recorder.flush()
    return recorder


async def test_recorded_batches_are_the_group_by_of_the_ledger(engine):
    records = varied(45)
    await record(engine, records, batch_size=7)
    assert await assert_rolled_up(engine) == 45
    async with engine.connect() as conn:
        hourly, daily = await stored(conn, "hour"), await stored(conn, "day")
    assert len({key[0] for key in daily}) == 2  # across the midnight
    assert sum(row["requests"] for row in hourly.values()) == 45
    assert sum(row["cost"] for row in daily.values()) == sum(r.cost for r in records)
    assert sum(row[f"lat_{OVERFLOW:02d}"] for row in daily.values()) > 0
    async with read_snapshot(engine) as conn:
        report = await verify_rollups(conn)
    assert report.ok, report.differences
    assert (report.rows["usage_hourly"], report.rows["usage_daily"]) == (len(hourly), len(daily))
    assert set(report.rows) == {f"usage_{g}{p}" for g in ("hourly", "daily")
                                for p in ("", "_scopes", "_models")}  # fmt: skip


async def test_duplicates_are_counted_once(engine):
    records = varied(12)
    first, later = records[:6], records[6:]
    # Twice in one batch (the second meets the first), then again in later batches.
    changed = UsageRecord(**{**first[0].row(), "cost": Decimal(99), "model": "other"})
    await record(engine, [*first, changed, first[1]], batch_size=100)
    await record(engine, [*first, *later], batch_size=4)
    await record(engine, records, batch_size=100)
    assert await assert_rolled_up(engine) == 12
    async with engine.connect() as conn:
        daily = await stored(conn, "day")
    assert sum(row["cost"] for row in daily.values()) == sum(r.cost for r in records)


async def test_a_replayed_spool_is_counted_once(engine, tmp_path: Path):
    # A crash after a batch committed but before the spool moved past it: the next
    # start replays records the ledger has, beside ones it has not.
    written, unwritten = varied(20, "old"), varied(10, "new", T0 + timedelta(hours=1))
    await record(engine, written)
    with contextlib.closing(Spool(tmp_path)) as left:
        left.own.append([r.row() for r in written[5:]] + [r.row() for r in unwritten])
    recorder = UsageRecorder(engine, Metrics(), batch_size=8, spool=Spool(tmp_path))
    assert recorder.degraded
    await recorder.flush()
    assert not recorder.degraded
    recorder.spool.close()
    assert await assert_rolled_up(engine) == 30


async def test_refused_records_leave_the_rest_rolled_up(engine):
    # A row the database refuses sends the batch row by row: each row in a transaction
    # of its own, with its roll-up; the refused one in neither.
    records = varied(6)
    bad = UsageRecord(**{**records[2].row(), "id": "req_bad", "model": None})
    metrics = Metrics()
    recorder = UsageRecorder(engine, metrics)
    for one in [*records[:3], bad, *records[3:]]:
        recorder.add(one)
    await recorder.flush()
    assert metrics.registry.get_sample_value("tollhouse_usage_records_rejected_total") == 1
    assert await assert_rolled_up(engine) == 6


async def test_a_failed_batch_rolls_up_nothing(engine):
    # The roll-up commits with its records or not at all: a transaction rolled back
    # after roll_up leaves both tables as they were.
    rows = [r.row() for r in varied(5)]
    with pytest.raises(RuntimeError):
        async with engine.begin() as conn:
            await roll_up(conn, rows)
            raise RuntimeError("the batch failed after its roll-up")
    async with engine.connect() as conn:
        assert await stored(conn, "hour") == {}
        assert await stored(conn, "day") == {}
    async with engine.begin() as conn:
        await roll_up(conn, [])  # nothing inserted: nothing to add
    async with engine.connect() as conn:
        assert await stored(conn, "day") == {}


def test_inserted_takes_each_returned_id_once_in_batch_order():
    rows = [{"id": "a", "n": 1}, {"id": "b", "n": 2}, {"id": "a", "n": 3}, {"id": "c", "n": 4}]
    assert inserted(rows, {"a", "c"}) == [{"id": "a", "n": 1}, {"id": "c", "n": 4}]
    assert inserted(rows, set()) == []


def test_latency_buckets_take_the_first_bound_at_or_above():
    assert [latency_bucket(x) for x in (-1.0, 0.0, 1.0)] == [0, 0, 0]
    assert latency_bucket(1.000001) == 1
    for i, bound in enumerate(LATENCY_BOUNDS_MS):
        assert latency_bucket(float(bound)) == i
        assert latency_bucket(bound + 0.001) == i + 1
    assert latency_bucket(float("inf")) == OVERFLOW
    assert latency_bucket(float("nan")) == OVERFLOW  # as Postgres orders NaN


async def test_rollups_are_keyed_on_the_utc_hour_of_any_offset(engine):
    # A record stamped in another zone lands in the UTC hour and day of its instant.
    from datetime import timezone

    tokyo = timezone(timedelta(hours=9))
    when = datetime(2026, 11, 22, 8, 30, tzinfo=tokyo)  # 23:30 UTC the day before
    await record(engine, [usage_record(id="req_tokyo", created_at=when)])
    async with engine.connect() as conn:
        [(hour, *_)] = await stored(conn, "hour")
        [(day, *_)] = await stored(conn, "day")
    assert (hour, day) == (
        datetime(2026, 11, 21, 23, tzinfo=UTC),
        datetime(2026, 11, 21, tzinfo=UTC),
    )
    await assert_rolled_up(engine)


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_concurrent_batches_of_two_replicas_neither_deadlock_nor_drift(db_url):
    # Two recorders on engines of their own (two replicas) write batches at once that
    # add to the same 300 roll-up rows, the second's records in the reverse order of the
    # first's. The upserts lock rows in sorted order, so neither batch can hold a row
    # the other has and wait for one the other holds (unsorted, Postgres finds a
    # deadlock here within a few batches).
    keys = [f"vk_{n:03d}" for n in range(300)]

    def batches(name: str, order: list[str]) -> list[UsageRecord]:
        return [
            usage_record(id=f"{name}_{n:02d}_{key}", created_at=T0, key_id=key,
                         cost=Decimal(n + 1) / 10**9, latency_ms=float(n))
            for n in range(ROUNDS)
            for key in order
        ]  # fmt: skip

    async with engine_for(db_url) as one, engine_for(db_url) as two:
        first = UsageRecorder(one, Metrics(), batch_size=len(keys))
        second = UsageRecorder(two, Metrics(), batch_size=len(keys))
        for one_record in batches("a", keys):
            first.add(one_record)
        for one_record in batches("b", keys[::-1]):
            second.add(one_record)
        async with asyncio.timeout(60):
            await asyncio.gather(first.flush(), second.flush())
        assert first.written == second.written == ROUNDS * len(keys)
        assert await assert_rolled_up(one) == 2 * ROUNDS * len(keys)
        async with one.connect() as conn:
            summed = await conn.execute(select(func.sum(usage_hourly.c.requests)))
            assert int(summed.scalar_one()) == 2 * ROUNDS * len(keys)


ROUNDS = 12


async def test_the_ledger_read_back_is_what_was_recorded(engine):
    # sums.ledger reads what the database holds: the same records, to the nano-dollar.
    records = varied(9)
    await record(engine, records)
    async with engine.connect() as conn:
        back = await ledger(conn)
    assert grouped(back, "day") == grouped([r.row() for r in records], "day")


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_a_nan_latency_counts_past_the_last_bound_in_python_and_in_sql(engine):
    # Postgres stores NaN (SQLite refuses it: NULL in a NOT NULL column) and orders it
    # above every number; roll_up, the back-fill and the check all put it in lat_29.
    await record(engine, [usage_record(id="req_nan", latency_ms=float("nan"))])
    async with engine.connect() as conn:
        [day] = (await stored(conn, "day")).values()
    assert day[f"lat_{OVERFLOW:02d}"] == 1
    async with read_snapshot(engine) as conn:
        assert (await verify_rollups(conn)).ok
