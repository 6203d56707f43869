"""``tollhouse ledger verify`` checks the roll-ups against the ledger, and ``tollhouse ledger
rebuild-rollups`` repairs them: usage written by the real recorder holds (exit 0); each
kind of tampering, made with direct SQL, is found and named (exit 1) and a rebuild puts it
right. On SQLite and on Postgres."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from tests.cli.helpers import assert_ok
from tests.credits.books import busy_ledger
from tests.ledger.records import usage_record
from tests.ledger.sums import assert_rolled_up
from tests.ledger.test_rollups import record, varied
from tests.support import engine_for

from tollhouse.db.snapshot import read_snapshot
from tollhouse.ledger.models import DIMENSIONS, usage_daily, usage_hourly, usage_records
from tollhouse.ledger.verify import verify_rollups

HOUR = datetime(2026, 11, 21, 23, tzinfo=UTC)  # a bucket varied() fills
DAY1, DAY2 = datetime(2026, 11, 21, tzinfo=UTC), datetime(2026, 11, 22, tzinfo=UTC)
Change = Callable[[AsyncConnection], Awaitable[None]]


@pytest.fixture
def config(tmp_path: Path, db_url: str) -> Path:
    path = tmp_path / "tollhouse.yaml"
    path.write_text(f"database_url: {db_url}\n")
    return path


@pytest.fixture
def recorded(db_url: str) -> int:
    async def run() -> int:
        async with engine_for(db_url) as engine:
            await record(engine, varied(45), batch_size=10)
            return await assert_rolled_up(engine)

    return asyncio.run(run())


def tamper(db_url: str, change: Change) -> None:
    async def run() -> None:
        async with engine_for(db_url) as engine, engine.begin() as conn:
            await change(conn)

    asyncio.run(run())


def check(db_url: str) -> Any:
    async def run() -> Any:
        async with engine_for(db_url) as engine, read_snapshot(engine) as conn:
            return await verify_rollups(conn)

    return asyncio.run(run())


def rollups(invoke: Any) -> tuple[int, dict[str, Any]]:
    result = invoke("ledger", "verify", "--json")
    assert result.exit_code in (0, 1), (result.output, result.exception)
    found = json.loads(result.output)
    assert found["ok"] is (result.exit_code == 0)
    return result.exit_code, found["rollups"]


def first_row(table: Any, bucket: datetime) -> Any:
    c = table.c
    return select(table).where(c.bucket == bucket).order_by(c.key_id, c.model, c.status).limit(1)


async def change_a_cost(conn: AsyncConnection) -> None:
    row = (await conn.execute(first_row(usage_hourly, HOUR))).one()
    key = [usage_hourly.c[name] == getattr(row, name) for name in ("bucket", *DIMENSIONS)]
    cost = row.cost + Decimal("0.000000001")
    await conn.execute(update(usage_hourly).where(*key).values(cost=cost))


async def delete_a_day(conn: AsyncConnection) -> None:
    await conn.execute(delete(usage_daily).where(usage_daily.c.bucket == DAY2))


async def insert_an_extra_row(conn: AsyncConnection) -> None:
    row = (await conn.execute(first_row(usage_hourly, HOUR))).one()._asdict()
    await conn.execute(insert(usage_hourly).values({**row, "model": "made-up"}))


async def insert_a_record_by_hand(conn: AsyncConnection) -> None:
    # A manual ledger edit: the record is there, its roll-ups are not.
    record = usage_record(id="req_by_hand", created_at=HOUR + timedelta(minutes=1))
    await conn.execute(insert(usage_records).values(record.row()))


@pytest.mark.parametrize(
    ("change", "found"),
    [
        (change_a_cost, {("usage_hourly", "different")}),
        (delete_a_day, {("usage_daily", "missing")}),
        (insert_an_extra_row, {("usage_hourly", "extra")}),
        (
            # Every table lacks it, the projections included (each is checked against
            # the ledger); a full table's row is missing or different as the record's
            # dimensions are new in its bucket or not.
            insert_a_record_by_hand,
            {
                (f"usage_{grain}{projection}", None)
                for grain in ("hourly", "daily")
                for projection in ("", "_scopes", "_models")
            },
        ),
    ],
    ids=lambda v: getattr(v, "__name__", None),
)
def test_tampering_is_found_and_a_rebuild_repairs_it(invoke, db_url, recorded, change, found):
    code, report = rollups(invoke)
    assert (code, report["ok"], report["differences"]) == (0, True, [])
    result = invoke("ledger", "verify")
    assert_ok(result)
    assert "The roll-ups hold:" in result.output
    assert "usage_hourly row(s) and" in result.output

    tamper(db_url, change)
    code, report = rollups(invoke)
    assert code == 1
    differences = {(d["table"], d["check"]) for d in report["differences"]}
    assert {table for table, _ in differences} == {table for table, _ in found}
    assert {(t, c) for t, c in found if c is not None} <= differences
    result = invoke("ledger", "verify")
    assert result.exit_code == 1
    assert "difference(s) in the roll-ups" in result.output
    assert "rebuild-rollups" in result.output

    result = invoke("ledger", "rebuild-rollups")
    assert_ok(result)
    assert result.output.startswith("Rebuilt the roll-ups from the whole ledger: ")
    code, report = rollups(invoke)
    assert (code, report["differences"]) == (0, [])


def test_differences_say_what_differs(db_url, recorded):
    tamper(db_url, change_a_cost)
    tamper(db_url, delete_a_day)
    tamper(db_url, insert_an_extra_row)
    report = check(db_url)
    assert not report.ok
    assert not report.more
    by_check = {d.check: d for d in report.differences}
    different = by_check["different"]
    assert (different.table, different.bucket) == ("usage_hourly", HOUR)
    assert different.expected.startswith("cost ") and different.expected.endswith(" USD")
    assert different.found != different.expected
    assert "," not in different.expected  # only the measure that differs
    missing = by_check["missing"]
    assert (missing.bucket, missing.found) == (DAY2, "no row")
    assert missing.expected.startswith("requests ")
    extra = by_check["extra"]
    assert (extra.model, extra.expected) == ("made-up", "no row")
    assert extra.found.startswith("requests ")
    assert extra.group.startswith("customer=")
    assert {d.check for d in report.differences} == {"different", "missing", "extra"}


def test_a_long_list_of_differences_is_cut_and_says_so(db_url, recorded):
    async def empty(conn: AsyncConnection) -> None:
        await conn.execute(delete(usage_hourly))

    tamper(db_url, empty)

    async def run() -> Any:
        async with engine_for(db_url) as engine, read_snapshot(engine) as conn:
            return await verify_rollups(conn, listed=3)

    report = asyncio.run(run())
    assert report.more
    assert [d.check for d in report.differences] == ["missing"] * 3
    assert [d.bucket for d in report.differences] == sorted(d.bucket for d in report.differences)


def test_a_rebuild_since_a_day_leaves_the_days_before(invoke, db_url, recorded):
    tamper(db_url, delete_a_day)  # DAY2

    async def off_on_day1(conn: AsyncConnection) -> None:
        await conn.execute(
            update(usage_daily).where(usage_daily.c.bucket == DAY1).values(requests=10**6)
        )

    tamper(db_url, off_on_day1)
    result = invoke("ledger", "rebuild-rollups", "--since", "2026-11-22T05:00:00Z", "--json")
    assert_ok(result)
    answer = json.loads(result.output)
    assert answer["since"].startswith("2026-11-22T00:00:00")
    assert answer["hourly_rows"] > 0 and answer["daily_rows"] > 0
    code, report = rollups(invoke)
    assert code == 1
    assert {(d["bucket"][:10], d["check"]) for d in report["differences"]} == {
        ("2026-11-21", "different")
    }
    result = invoke("ledger", "rebuild-rollups", "--since", "2026-11-21")
    assert_ok(result)
    assert "from 2026-11-21 (UTC) on" in result.output
    assert rollups(invoke)[0] == 0


def test_a_rebuild_of_an_empty_ledger_empties_the_rollups(invoke, db_url, recorded):
    async def forget(conn: AsyncConnection) -> None:
        await conn.execute(delete(usage_records))

    tamper(db_url, forget)
    assert rollups(invoke)[0] == 1  # every row is extra now
    result = invoke("ledger", "rebuild-rollups", "--json")
    assert_ok(result)
    assert json.loads(result.output) == {"since": None, "hourly_rows": 0, "daily_rows": 0}
    code, report = rollups(invoke)
    assert code == 0 and set(report["rows"].values()) == {0} and len(report["rows"]) == 6


def test_a_bad_since_is_refused(invoke, recorded):
    result = invoke("ledger", "rebuild-rollups", "--since", "yesterday")
    assert result.exit_code == 2
    assert "--since" in result.output and "RFC 3339" in result.output


def test_one_account_is_checked_without_the_rollups(invoke, db_url):
    async def build() -> list[str]:
        async with engine_for(db_url) as engine:
            return (await busy_ledger(engine)).accounts

    accounts = asyncio.run(build())
    tamper(db_url, delete_a_whole_table)
    assert rollups(invoke)[0] == 1
    result = invoke("ledger", "verify", "--json", "--account", accounts[0])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["rollups"] is None
    result = invoke("ledger", "verify", "--account", accounts[0])
    assert_ok(result)
    assert "roll-ups" not in result.output


async def delete_a_whole_table(conn: AsyncConnection) -> None:
    await conn.execute(delete(usage_daily))
