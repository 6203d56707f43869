"""``tollhouse ledger verify``: a ledger built through the real code paths holds (exit 0);
each kind of tampering, made with direct SQL, is found and named (exit 1): a leg's
amount, a projection, a deleted post, a usage record with no post, a lot's remaining, a
leg's counter-account. On SQLite and on Postgres; once as a real process."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from tests.cli.helpers import assert_ok
from tests.credits.books import Books, busy_ledger, usage_record
from tests.support import engine_for

from tollhouse.credits.models import (
    credit_accounts,
    credit_legs,
    credit_lots,
    credit_transactions,
)
from tollhouse.ledger.models import usage_records

Tamper = Callable[[AsyncConnection, Books], Awaitable[str]]


@pytest.fixture
def config(tmp_path: Path, db_url: str) -> Path:
    path = tmp_path / "tollhouse.yaml"
    path.write_text(f"database_url: {db_url}\n")
    return path


@pytest.fixture
def books(db_url: str) -> Books:
    async def build() -> Books:
        async with engine_for(db_url) as engine:
            return await busy_ledger(engine)

    return asyncio.run(build())


def tamper(db_url: str, books: Books, change: Tamper) -> str:
    async def run() -> str:
        async with engine_for(db_url) as engine, engine.begin() as conn:
            return await change(conn, books)

    return asyncio.run(run())


def report(invoke: Any, *args: str) -> tuple[int, dict[str, Any]]:
    result = invoke("ledger", "verify", "--json", *args)
    assert result.exit_code in (0, 1), (result.output, result.exception)
    return result.exit_code, json.loads(result.output)


def test_a_ledger_built_by_the_code_holds(invoke, books):
    result = invoke("ledger", "verify")
    assert_ok(result)
    assert "The credit ledger holds: 2 account(s)" in result.output
    code, found = report(invoke)
    assert code == 0
    assert found["ok"] is True
    assert found["differences"] == []
    # One post per account and batch (a: its two paid records, then a late one; b: one);
    # the zero-cost record and the unpaid one post nothing.
    assert found["posts"] == 3
    code, found = report(invoke, "--account", books.accounts[1])
    assert (code, found["accounts"], found["posts"]) == (0, 1, 1)


async def _first_transaction(conn: AsyncConnection, account_id: str, kind: str) -> Any:
    t = credit_transactions.c
    query = select(credit_transactions).where(t.account_id == account_id, t.kind == kind)
    return (await conn.execute(query.order_by(t.seq))).first()


async def change_a_leg(conn: AsyncConnection, books: Books) -> str:
    row = await _first_transaction(conn, books.accounts[0], "grant")
    legs = credit_legs.c
    await conn.execute(
        update(credit_legs)
        .where(legs.transaction_seq == row.seq, legs.leg == 1)
        .values(amount=-row.amount + Decimal("0.01"))
    )
    return f"transaction {row.seq}"


async def change_a_projection(conn: AsyncConnection, books: Books) -> str:
    a = credit_accounts.c
    await conn.execute(
        update(credit_accounts)
        .where(a.id == books.accounts[1])
        .values(funded=a.funded + Decimal("1"))
    )
    return "off by 1"


async def delete_a_post(conn: AsyncConnection, books: Books) -> str:
    t = credit_transactions.c
    batch = books.requests[books.accounts[0]][:2]  # written together: one post
    await conn.execute(delete(credit_transactions).where(t.key == f"post:{batch[0]}"))
    return f"missing: {', '.join(sorted(batch))}"


async def insert_an_unposted_record(conn: AsyncConnection, books: Books) -> str:
    record = usage_record(books.accounts[1], Decimal("0.2"), datetime.now(UTC))
    await conn.execute(insert(usage_records).values(record.row()))
    return f"missing: {record.id}"


async def change_a_lot(conn: AsyncConnection, books: Books) -> str:
    lots = credit_lots.c
    lot = (
        await conn.execute(
            select(credit_lots).where(lots.account_id == books.accounts[1], lots.status == "active")
        )
    ).one()
    await conn.execute(
        update(credit_lots).where(lots.id == lot.id).values(remaining=lot.remaining + 1)
    )
    return "active lots hold"


async def change_a_counter_account(conn: AsyncConnection, books: Books) -> str:
    row = await _first_transaction(conn, books.accounts[0], "post")
    legs = credit_legs.c
    await conn.execute(
        update(credit_legs)
        .where(legs.transaction_seq == row.seq, legs.leg == 1)
        .values(ledger_account="platform:breakage")
    )
    return "counter-account"


@pytest.mark.parametrize(
    ("change", "account", "checks"),
    [
        (change_a_leg, 0, {"legs"}),
        (change_a_projection, 1, {"funded"}),
        # The journal lost a post: the ledger still has its record, the projection and
        # the lots still count it.
        (delete_a_post, 0, {"posts", "spent", "lots"}),
        (insert_an_unposted_record, 1, {"posts"}),
        (change_a_lot, 1, {"lots"}),
        (change_a_counter_account, 0, {"legs"}),
    ],
    ids=lambda v: getattr(v, "__name__", None),
)
def test_tampering_is_found_and_named(invoke, db_url, books, change, account, checks):
    account_id = books.accounts[account]
    named = tamper(db_url, books, change)

    result = invoke("ledger", "verify")
    assert result.exit_code == 1, (result.output, result.exception)
    assert account_id in result.output
    assert named in result.output

    code, found = report(invoke)
    assert code == 1
    assert found["ok"] is False
    assert {d["check"] for d in found["differences"]} == checks
    assert {d["account_id"] for d in found["differences"]} == {account_id}
    # The other account still holds on its own.
    other = books.accounts[1 - account]
    assert report(invoke, "--account", other)[0] == 0


def test_records_naming_an_unknown_account_are_a_difference(invoke, db_url, books):
    async def orphan(conn: AsyncConnection, _: Books) -> str:
        record = usage_record("acct_gone", Decimal("0.2"), datetime.now(UTC))
        await conn.execute(insert(usage_records).values(record.row()))
        return record.id

    tamper(db_url, books, orphan)
    code, found = report(invoke)
    assert code == 1
    [difference] = found["differences"]
    assert difference["account_id"] == "acct_gone"
    assert difference["check"] == "posts"
    assert "1 usage record(s) name it" in difference["detail"]


def test_an_unknown_account_or_no_database_cannot_be_checked(invoke, books, tmp_path):
    result = invoke("ledger", "verify", "--account", "acct_nope")
    assert result.exit_code == 2
    assert "credit account 'acct_nope' not found" in result.output
    missing = tmp_path / "missing.yaml"
    result = invoke("ledger", "verify", config_file=missing)
    assert result.exit_code == 2
    assert "cannot read config file" in result.output


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_verify_runs_as_a_process(config, books, db_url, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOLLHOUSE_")}
    command = [sys.executable, "-m", "tollhouse", "ledger", "verify", "--config", str(config)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "no difference" in done.stdout

    tamper(db_url, books, change_a_projection)
    done = subprocess.run([*command, "--json"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1, done.stderr
    [difference] = json.loads(done.stdout)["differences"]
    assert (difference["account_id"], difference["check"]) == (books.accounts[1], "funded")

    empty = tmp_path / "empty.yaml"
    empty.write_text(f"database_url: sqlite+aiosqlite:///{tmp_path / 'empty.db'}\n")
    done = subprocess.run(
        [*command[:-1], str(empty)], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2
    assert "database error" in done.stderr
