"""``credits.verify`` names each kind of difference it looks for, on SQLite and Postgres:
a ledger built through the real code paths holds, then one thing at a time is broken in
SQL and found — lots on their own, debt, posts of another amount, extra posts, records
naming a post of another account, movements of no account, legs without their
transaction — and long lists of request ids are cut short."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from tests.credits.books import Books, busy_ledger, usage_record

from tollhouse.credits.journal import Movement, book
from tollhouse.credits.models import (
    credit_accounts,
    credit_legs,
    credit_lots,
    credit_transactions,
)
from tollhouse.credits.verify import Difference, verify_engine
from tollhouse.ledger.models import usage_records

_a, _t, _lot = credit_accounts.c, credit_transactions.c, credit_lots.c


@pytest.fixture
async def books(engine: AsyncEngine) -> Books:
    books = await busy_ledger(engine)
    assert (await verify_engine(engine)).ok
    return books


async def differences(engine: AsyncEngine, account: str | None = None) -> list[Difference]:
    return (await verify_engine(engine, account)).differences


async def _lot_of(conn: AsyncConnection, account: str, status: str) -> Any:
    query = select(credit_lots).where(_lot.account_id == account, _lot.status == status)
    return (await conn.execute(query.order_by(_lot.created_at))).first()


@pytest.mark.parametrize(
    ("status", "values", "expected"),
    [
        ("active", {"status": "lapsed"}, "status scheduled, active or expired"),
        ("active", {"remaining": Decimal("-1")}, "remaining 0 USD or more"),
        ("expired", {"remaining": Decimal("1")}, "remaining 0 USD once expired"),
        ("scheduled", {"remaining": Decimal("1")}, "remaining 4 USD (untouched)"),
        ("active", {"status": "scheduled"}, "not funded before it takes effect"),
        ("active", {"amount": Decimal("99")}, "funded once by 99 USD"),
    ],
)
async def test_each_lot_is_checked_on_its_own(engine, books, status, values, expected):
    account = books.accounts[0]
    async with engine.begin() as conn:
        lot = await _lot_of(conn, account, status)
        await conn.execute(update(credit_lots).where(_lot.id == lot.id).values(**values))
    found = [d for d in await differences(engine) if d.check == "lot"]
    assert [(d.account_id, d.expected, d.detail) for d in found] == [
        (account, expected, f"lot {lot.id}")
    ]


async def test_funding_naming_a_lot_there_is_not(engine, books):
    account = books.accounts[1]
    async with engine.begin() as conn:
        await conn.execute(
            update(credit_transactions)
            .where(_t.account_id == account, _t.kind == "grant")
            .values(lot_id="lot_gone")
        )
    found = {(d.check, d.expected, d.found) for d in await differences(engine)}
    assert ("lot", "lot lot_gone of this account", "no such lot") in found
    assert ("lot", "funded once by 3 USD", "0 funding transaction(s), 0 USD") in found


async def test_debt_is_never_negative_nor_owed_beside_credit(engine, books):
    account = books.accounts[1]
    async with engine.begin() as conn:
        await conn.execute(update(credit_accounts).where(_a.id == account).values(debt=-1))
    found = [(d.check, d.found) for d in await differences(engine) if d.check == "debt"]
    assert found == [("debt", "-1 USD")]
    async with engine.begin() as conn:
        await conn.execute(update(credit_accounts).where(_a.id == account).values(debt=2))
    [owed] = [d for d in await differences(engine) if d.check == "debt"]
    assert (owed.expected, owed.found) == ("no debt while lots have credit", "debt 2 USD")


async def _post(conn: AsyncConnection, account: str, request_id: str, amount: str, key: str):
    movement = Movement(account, "post", Decimal(amount), key, request_id=request_id)
    await book(conn, movement)


async def test_posts_of_another_amount_or_for_nothing_are_named(engine, books):
    account = books.accounts[1]
    [request_id] = books.requests[account]
    async with engine.begin() as conn:
        await conn.execute(
            update(usage_records).where(usage_records.c.id == request_id).values(cost=1)
        )
        await _post(conn, account, "req_nothing", "-0.5", "post:nothing")
    [posts] = [d for d in await differences(engine) if d.check == "posts"]
    assert posts.account_id == account
    assert posts.expected == "1 USD in 1 paid record(s) (usage ledger)"
    assert posts.found == "0.75 USD in 2 post(s) (journal)"
    assert posts.detail == f"extra: post:nothing; amount differs: post:{request_id}"


async def test_a_record_naming_a_post_of_another_account_is_not_posted(engine, books):
    a, b = books.accounts
    [request_id] = books.requests[b]
    key = await _post_key(engine, books.requests[a][0])
    async with engine.begin() as conn:
        await conn.execute(
            update(usage_records).where(usage_records.c.id == request_id).values(credit_post=key)
        )
    found = {d.account_id: d.detail for d in await differences(engine) if d.check == "posts"}
    assert found == {b: f"missing: {request_id}; extra: post:{request_id}"}


async def _post_key(engine: AsyncEngine, request_id: str) -> str:
    async with engine.connect() as conn:
        query = select(usage_records.c.credit_post).where(usage_records.c.id == request_id)
        return str(await conn.scalar(query))


async def test_long_lists_of_request_ids_are_cut_short(engine, books):
    account = books.accounts[1]
    now = datetime.now(UTC)
    records = [usage_record(account, Decimal("0.01"), now, f"req_{n:02}") for n in range(8)]
    async with engine.begin() as conn:
        await conn.execute(insert(usage_records), [r.row() for r in records])
    [posts] = [d for d in await differences(engine, account) if d.check == "posts"]
    assert posts.detail == "missing: req_00, req_01, req_02, req_03, req_04 and 3 more"


@contextlib.asynccontextmanager
async def without_foreign_keys(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    """A connection that can break what foreign keys hold (as a bad restore would)."""
    async with engine.connect() as conn:
        if conn.dialect.name == "sqlite":
            await conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
        else:
            await conn.exec_driver_sql("SET session_replication_role = replica")
        await conn.commit()
        yield conn
        await conn.commit()


async def test_movements_of_no_account_and_legs_of_no_movement(engine, books):
    account = books.accounts[1]
    async with without_foreign_keys(engine) as conn:
        seq = await conn.scalar(select(_t.seq).where(_t.account_id == account, _t.kind == "post"))
        await conn.execute(delete(credit_transactions).where(_t.seq == seq))
        await conn.execute(
            update(credit_transactions).where(_t.kind == "post").values(account_id="acct_gone")
        )
        legs = await conn.scalar(
            select(credit_legs.c.transaction_seq).where(credit_legs.c.transaction_seq == seq)
        )
        assert legs == seq  # the foreign key would have taken them
    found = {(d.account_id, d.check, d.detail) for d in await differences(engine)}
    assert ("acct_gone", "account", "2 transaction(s) name it") in found  # a: batch, late
    assert ("-", "legs", f"transaction {seq} is not in the journal") in found


async def test_legs_that_do_not_balance_or_name_the_wrong_counter_account(engine, books):
    account = books.accounts[1]
    _g = credit_legs.c
    async with engine.begin() as conn:
        seq = await conn.scalar(select(_t.seq).where(_t.account_id == account, _t.kind == "grant"))
        await conn.execute(
            update(credit_legs).where(_g.transaction_seq == seq, _g.leg == 1).values(amount=-2)
        )
        seq = await conn.scalar(select(_t.seq).where(_t.account_id == account, _t.kind == "post"))
        await conn.execute(
            update(credit_legs)
            .where(_g.transaction_seq == seq, _g.leg == 1)
            .values(ledger_account="platform:breakage")
        )
    found = [(d.expected, d.found) for d in await differences(engine, account) if d.check == "legs"]
    assert ("2 legs summing to 0", "2 leg(s) summing to 1") in found
    assert ("platform:revenue", "platform:breakage") in found


async def test_usage_paid_by_an_account_there_is_not_is_named(engine, books):
    now = datetime.now(UTC)
    async with without_foreign_keys(engine) as conn:
        record = usage_record("acct_gone", Decimal("0.5"), now)
        await conn.execute(insert(usage_records), [record.row()])
    found = [d for d in await differences(engine) if d.check == "posts"]
    assert [(d.account_id, d.expected, d.found, d.detail) for d in found] == [
        ("acct_gone", "a credit account", "none", "1 usage record(s) name it as the paying account")
    ]
