"""Money and time columns keep their values exactly, on SQLite and on Postgres."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, insert, select, text
from sqlalchemy.exc import StatementError

from tollhouse.db.types import Money, UTCDateTime

AMOUNTS = [
    Decimal("0"),
    Decimal("0.000000001"),
    Decimal("0.000001"),
    Decimal("0.0000102"),
    Decimal("1.5"),
    Decimal("123456.789012345"),
    Decimal("9000000000.999999999"),
    Decimal("-0.000000001"),
]

_meta = MetaData()
ledger = Table(
    "money_probe",
    _meta,
    Column("id", Integer, primary_key=True),
    Column("amount", Money()),
    Column("at", UTCDateTime()),
)


@pytest.fixture
async def probe(db_engine):
    async with db_engine.begin() as conn:
        await conn.run_sync(_meta.create_all)
    return db_engine


async def test_money_round_trips_exactly(probe):
    async with probe.begin() as conn:
        await conn.execute(insert(ledger), [{"id": i, "amount": a} for i, a in enumerate(AMOUNTS)])
    async with probe.connect() as conn:
        rows = (await conn.execute(select(ledger.c.amount).order_by(ledger.c.id))).scalars().all()
    assert rows == AMOUNTS
    assert all(isinstance(r, Decimal) for r in rows)


async def test_money_sum_is_exact(probe):
    from sqlalchemy import func

    amounts = [Decimal("0.000000001")] * 1000 + [Decimal("0.1")] * 10
    async with probe.begin() as conn:
        await conn.execute(insert(ledger), [{"id": i, "amount": a} for i, a in enumerate(amounts)])
    async with probe.connect() as conn:
        total = (await conn.execute(select(func.sum(ledger.c.amount)))).scalar_one()
    assert total == Decimal("1.000001")


async def test_money_storage_per_dialect(probe):
    async with probe.begin() as conn:
        await conn.execute(insert(ledger), [{"id": 1, "amount": Decimal("123456.789012345")}])
    async with probe.connect() as conn:
        if probe.dialect.name == "sqlite":
            row = (await conn.execute(text("SELECT amount, typeof(amount) FROM money_probe"))).one()
            assert tuple(row) == (123456789012345, "integer")
        else:
            row = (
                await conn.execute(text("SELECT amount, pg_typeof(amount)::text FROM money_probe"))
            ).one()
            assert tuple(row) == (Decimal("123456.789012345"), "numeric")
            scale = (
                await conn.execute(
                    text(
                        "SELECT numeric_precision, numeric_scale FROM information_schema.columns"
                        " WHERE table_name = 'money_probe' AND column_name = 'amount'"
                    )
                )
            ).one()
            assert tuple(scale) == (38, 9)


async def test_sub_nano_amounts_are_refused_on_sqlite_not_rounded(sqlite_engine):
    async with sqlite_engine.begin() as conn:
        await conn.run_sync(_meta.create_all)
    with pytest.raises(StatementError):
        async with sqlite_engine.begin() as conn:
            await conn.execute(insert(ledger), [{"id": 1, "amount": Decimal("0.0000000001")}])


async def test_utc_datetime_round_trip(probe):
    local = datetime(2026, 11, 21, 12, 30, 15, 123456, tzinfo=timezone(timedelta(hours=2)))
    async with probe.begin() as conn:
        await conn.execute(insert(ledger), [{"id": 1, "at": local}])
    async with probe.connect() as conn:
        stored = (await conn.execute(select(ledger.c.at))).scalar_one()
    assert stored == local
    assert stored.tzinfo is UTC or stored.utcoffset() == timedelta(0)
    assert stored.hour == 10


async def test_naive_datetime_is_refused(probe):
    with pytest.raises(StatementError):
        async with probe.begin() as conn:
            await conn.execute(insert(ledger), [{"id": 1, "at": datetime(2026, 1, 1)}])
