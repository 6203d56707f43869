"""The database goes away under load: nothing is lost, nothing is doubled.

A real PostgreSQL of the test's own is stopped (``pg_ctl -m immediate``: a crash, not a
polite shutdown) while requests keep coming. The gateway keeps answering; records go to
the spool on disk and ``/readyz`` says ``degraded``. When Postgres is back, the spool is
replayed in order, and the ledger holds exactly one record per 200 response.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import asyncpg
import httpx
import pytest
from tests.governance.helpers import HI, MODEL
from tests.ledger.sums import assert_rolled_up
from tests.support import engine_for, running, wait_until

from tollhouse.ledger.spool import Spool


@pytest.fixture
def settings(make_settings, private_postgres):
    url = private_postgres.url("tollhouse")
    return make_settings(database_url=url, database_connect_timeout_s=1.0)


async def ledger_ids(private_postgres) -> list[str]:
    conn = await asyncpg.connect(
        host="127.0.0.1", port=private_postgres.port, user="postgres", database="tollhouse"
    )
    try:
        rows = await conn.fetch("SELECT id FROM usage_records ORDER BY created_at, id")
    finally:
        await conn.close()
    return [row["id"] for row in rows]


async def send(client: httpx.AsyncClient, n: int) -> list[httpx.Response]:
    body = {"model": MODEL, "messages": HI, "max_tokens": 4}
    calls = (client.post("/v1/chat/completions", json=body) for _ in range(n))
    return list(await asyncio.gather(*calls))


async def test_postgres_outage_loses_no_record(settings, private_postgres, upstream):
    async with running(settings) as (app, client):
        recorder = app.services.recorder
        before = await send(client, 40)
        await recorder.flush()
        await asyncio.to_thread(private_postgres.stop)

        during = await send(client, 60)

        assert {r.status_code for r in before + during} == {200}
        await wait_until(lambda: _true(recorder.degraded), within=20)
        ready = (await client.get("/readyz")).json()
        assert ready["status"] == "degraded", ready
        await asyncio.to_thread(private_postgres.start)
        await wait_until(lambda: _true(not recorder.degraded and recorder.pending == 0), within=20)
        assert (await client.get("/readyz")).json()["status"] == "ready"

    ids = await ledger_ids(private_postgres)
    answered = [r.headers["x-request-id"] for r in before + during]
    assert sorted(ids) == sorted(answered)  # every 200 once, nothing else, nothing twice
    assert recorder.spooled > 0
    async with engine_for(private_postgres.url("tollhouse"), migrated=False) as engine:
        assert await assert_rolled_up(engine) == len(answered)  # and rolled up once


async def test_records_left_on_disk_are_replayed_by_the_next_start(
    settings, private_postgres, upstream
):
    async with running(settings) as (app, client):
        await app.services.recorder.flush()
        await asyncio.to_thread(private_postgres.stop)
        answered = [r.headers["x-request-id"] for r in await send(client, 30)]
    # Stopped with the database still away: the records wait in the spool directory.
    assert spooled_bytes(settings.spool_dir) > 0
    await asyncio.to_thread(private_postgres.start)
    async with running(settings) as (app, client):
        await wait_until(lambda: _true(not app.services.recorder.degraded), within=20)
    assert sorted(await ledger_ids(private_postgres)) == sorted(answered)
    assert spooled_bytes(settings.spool_dir) == 0


def test_a_torn_last_line_is_dropped_and_the_rest_replayed(tmp_path):
    with contextlib.closing(Spool(tmp_path)) as spool:
        spool.own.append([{"id": "a", "cost": "1"}, {"id": "b", "cost": "2"}])
        with spool.own.path.open("ab") as handle:
            handle.write(b'{"id": "c", "co')  # a crash in the middle of an append
        rows, offset = spool.own.read(10)
        assert [r["id"] for r in rows] == ["a", "b"]
        spool.own.consumed(offset)
        assert spool.own.pending  # the torn tail; the recorder drops it with an error log


def spooled_bytes(directory: str) -> int:
    return sum(p.stat().st_size for p in Path(directory).glob("usage-*.spool"))


async def _true(value: bool) -> bool:
    return value


def test_spool_files_and_their_directory_are_private(tmp_path):
    import os
    import stat

    def mode(path):
        return stat.S_IMODE(path.stat().st_mode)

    old = os.umask(0o022)
    try:
        directory = tmp_path / "spool"
        spool = Spool(directory)
        spool.own.append([{"id": "a"}, {"id": "b"}])
        spool.own.consumed(len(b'{"id":"a"}\n'))  # writes the offset file beside it
        files = sorted(directory.iterdir())
        assert [f.suffix for f in files] == [".offset", ".spool"]
        assert mode(directory) == 0o700
        assert {f.name: mode(f) for f in files} == {f.name: 0o600 for f in files}
        spool.close()
        # An existing directory that others could read is closed up too.
        os.chmod(directory, 0o755)
        Spool(directory).close()
        assert mode(directory) == 0o700
    finally:
        os.umask(old)
