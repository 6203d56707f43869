"""The batched usage recorder on a real SQLite file: batches, interval, stop, duplicates."""

from __future__ import annotations

import asyncio

from sqlalchemy import func, select, text
from tests.support import wait_until

from tollhouse.db.schema import downgrade, upgrade
from tollhouse.ledger import UsageRecorder
from tollhouse.ledger.models import usage_records
from tollhouse.ops.metrics import Metrics


async def row_count(engine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(usage_records))).scalar())


def recorder_for(engine, **kwargs) -> UsageRecorder:
    return UsageRecorder(engine, Metrics(), **kwargs)


async def test_flush_writes_every_buffered_record(engine, make_record):
    recorder = recorder_for(engine, batch_size=7, flush_interval_ms=60_000)
    for _ in range(20):
        recorder.add(make_record())
    assert recorder.pending == 20
    await recorder.flush()
    assert recorder.pending == 0
    assert recorder.written == 20
    assert await row_count(engine) == 20


async def test_records_round_trip_exactly(engine, make_record):
    from decimal import Decimal

    recorder = recorder_for(engine)
    original = make_record(
        cost=Decimal("123456.789012345"),
        key_id="key_1",
        team_id="team_1",
        customer_id="cus_1",
        upstream_request_id="chatcmpl-1",
        error=None,
        streamed=True,
        priced=False,
        cached_tokens=3,
    )
    recorder.add(original)
    await recorder.flush()
    async with engine.connect() as conn:
        row = (await conn.execute(select(usage_records))).one()
    assert row._asdict() == original.row()


async def test_a_full_batch_is_written_without_waiting_for_the_interval(engine, make_record):
    recorder = recorder_for(engine, batch_size=5, flush_interval_ms=60_000)
    await recorder.start()
    try:
        for _ in range(4):
            recorder.add(make_record())
        await asyncio.sleep(0.2)
        assert await row_count(engine) == 0  # below the batch size, the interval is long
        recorder.add(make_record())
        await wait_until(lambda: _has(engine, 5), within=2.0)

        async def taken() -> bool:  # the writer leaves the buffer once its commit returns
            return recorder.pending == 0

        await wait_until(taken, within=2.0, what="the buffer emptied")
    finally:
        await recorder.stop()


async def test_records_are_written_within_the_flush_interval(engine, make_record):
    recorder = recorder_for(engine, batch_size=1000, flush_interval_ms=50)
    await recorder.start()
    try:
        recorder.add(make_record())
        took = await wait_until(lambda: _has(engine, 1), within=2.0)
        assert took < 1.0
    finally:
        await recorder.stop()


async def test_a_burst_of_several_batches_is_written_within_one_interval(engine, make_record):
    # docs/ledger.md: a record is written at most ledger_flush_interval_ms after it
    # arrives. A burst of six batches must not take six intervals.
    recorder = recorder_for(engine, batch_size=5, flush_interval_ms=300)
    await recorder.start()
    try:
        for _ in range(30):
            recorder.add(make_record())
        took = await wait_until(lambda: _has(engine, 30), within=5.0)
        assert took < 0.9, f"30 records in batches of 5 took {took:.2f}s"
    finally:
        await recorder.stop()


async def test_stop_writes_everything(engine, make_record):
    recorder = recorder_for(engine, batch_size=100, flush_interval_ms=60_000)
    await recorder.start()
    for _ in range(250):
        recorder.add(make_record())
    await recorder.stop()
    assert recorder.pending == 0
    assert recorder.written == 250
    assert await row_count(engine) == 250


async def test_stop_without_start_and_twice_is_harmless(engine, make_record):
    recorder = recorder_for(engine)
    await recorder.stop()
    await recorder.start()
    await recorder.stop()
    await recorder.stop()
    assert await row_count(engine) == 0


async def test_duplicate_id_is_ignored_not_fatal(engine, make_record):
    recorder = recorder_for(engine, batch_size=10, flush_interval_ms=10)
    await recorder.start()
    try:
        first = make_record(id="req_dup")
        recorder.add(first)
        recorder.add(make_record(id="req_dup", model="other-model"))  # same batch
        recorder.add(make_record(id="req_other"))
        await recorder.flush()
        recorder.add(make_record(id="req_dup"))  # a later batch
        recorder.add(make_record(id="req_after"))
        await wait_until(lambda: _has(engine, 3), within=2.0)
        await asyncio.sleep(0.05)
        assert await row_count(engine) == 3
        assert recorder.pending == 0
        async with engine.connect() as conn:
            model = (
                await conn.execute(
                    select(usage_records.c.model).where(usage_records.c.id == "req_dup")
                )
            ).scalar_one()
        assert model == first.model  # the first write wins
    finally:
        await recorder.stop()


async def test_flush_beside_the_background_writer_never_doubles(engine, make_record):
    metrics = Metrics()
    recorder = UsageRecorder(engine, metrics, batch_size=50, flush_interval_ms=1)
    await recorder.start()
    try:
        for _ in range(1000):
            recorder.add(make_record())
        await asyncio.gather(recorder.flush(), recorder.flush(), asyncio.sleep(0.01))
    finally:
        await recorder.stop()
    assert await row_count(engine) == 1000
    assert recorder.written == 1000
    written = metrics.registry.get_sample_value("tollhouse_usage_records_written_total")
    assert written == 1000


async def test_failed_writes_keep_records_and_retry(engine, make_record):
    metrics = Metrics()
    recorder = UsageRecorder(engine, metrics, batch_size=10, flush_interval_ms=10)
    await downgrade(engine, "base")  # the table is gone: every write fails
    await recorder.start()
    try:
        for _ in range(5):
            recorder.add(make_record())

        async def failed_twice() -> bool:
            value = metrics.registry.get_sample_value("tollhouse_usage_write_failures_total")
            return (value or 0) >= 2

        await wait_until(failed_twice, within=5.0)
        assert recorder.pending == 5
        await upgrade(engine)  # the database is back
        await wait_until(lambda: _has(engine, 5), within=5.0)
        assert recorder.pending == 0
    finally:
        await recorder.stop()


async def test_sqlite_stores_cost_as_integer_nanos(sqlite_engine, make_record):
    from decimal import Decimal

    engine = sqlite_engine  # SQLite's storage class; Postgres's NUMERIC: tests/db/test_types.py
    recorder = recorder_for(engine)
    recorder.add(make_record(id="a", cost=Decimal("0.000000001")))
    recorder.add(make_record(id="b", cost=Decimal("9000000000.123456789")))
    await recorder.flush()
    async with engine.connect() as conn:
        rows = (
            await conn.execute(text("SELECT id, cost, typeof(cost) FROM usage_records ORDER BY id"))
        ).all()
    assert [tuple(r) for r in rows] == [
        ("a", 1, "integer"),
        ("b", 9_000_000_000_123_456_789, "integer"),
    ]


async def _has(engine, n: int) -> bool:
    return await row_count(engine) >= n
