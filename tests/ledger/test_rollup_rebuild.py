"""A rebuild of the roll-ups while a recorder writes beside it (an operator's repair on a
serving gateway): nothing lost, nothing counted twice, on SQLite and on Postgres; and
the statement timeout that whole-ledger reads lift."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import text
from tests.ledger.sums import assert_rolled_up
from tests.ledger.test_rollups import T0, varied

from tollhouse.db.snapshot import read_snapshot
from tollhouse.ledger import UsageRecorder
from tollhouse.ledger.verify import rebuild, verify_rollups
from tollhouse.ops.metrics import Metrics


async def test_a_rebuild_beside_a_writing_recorder_loses_and_doubles_nothing(engine):
    records = varied(300)
    recorder = UsageRecorder(engine, Metrics(), batch_size=15)
    rebuilt = 0

    async def write() -> None:
        for start in range(0, len(records), 15):
            for one in records[start : start + 15]:
                recorder.add(one)
            await recorder.flush()

    async def rebuild_again_and_again() -> None:
        nonlocal rebuilt
        while recorder.written < len(records):
            since = None if rebuilt % 2 else T0 + timedelta(days=1)  # all, or a day on
            async with engine.begin() as conn:
                await rebuild(conn, since)
            rebuilt += 1
            await asyncio.sleep(0)

    async with asyncio.timeout(60):
        await asyncio.gather(write(), rebuild_again_and_again())
    assert rebuilt >= 2
    assert await assert_rolled_up(engine) == len(records)


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
async def test_whole_ledger_reads_lift_the_statement_timeout_for_their_transaction(engine):
    # At millions of records a check or a rebuild outlasts the 10 s a server's
    # statements get: each lifts it for its own transaction, and only there.
    show = text("SHOW statement_timeout")
    async with read_snapshot(engine) as conn:
        assert (await conn.execute(show)).scalar_one() == "10s"
        assert (await verify_rollups(conn)).ok
        assert (await conn.execute(show)).scalar_one() == "0"
    async with engine.begin() as conn:
        await rebuild(conn)
        assert (await conn.execute(show)).scalar_one() == "0"
    async with engine.connect() as conn:
        assert (await conn.execute(show)).scalar_one() == "10s"
