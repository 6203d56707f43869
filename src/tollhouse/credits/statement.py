"""An account's journal as a statement: newest first, cursor-paged, each movement with
the balance after it; and the same as CSV, oldest first, for spreadsheets.

The cursor is the journal sequence number of the last movement shown: a page is the
movements booked before it, so pages neither skip nor repeat a movement while new
ones are booked. ``as_of`` hides movements booked at or after that time (the balance
then is the last ``balance_after``).
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tollhouse.credits.models import credit_transactions
from tollhouse.errors import ValidationFailed
from tollhouse.money import format_usd
from tollhouse.web.query import ascii_digits
from tollhouse.web.responses import rfc3339

_t = credit_transactions.c
COLUMNS = (
    "seq", "id", "key", "created_at", "kind", "amount", "balance_after", "category", "lot_id",
    "request_id", "payment_intent", "stripe_event", "reverses", "memo",
)  # fmt: skip


def cursor_value(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    if not ascii_digits(cursor) or len(cursor) > 18:
        raise ValidationFailed("cursor is not one this API gave", param="cursor")
    return int(cursor)


async def _balance_through(conn: AsyncConnection, account_id: str, seq: int) -> Decimal:
    query = select(func.coalesce(func.sum(_t.amount), 0)).where(
        _t.account_id == account_id, _t.seq <= seq
    )
    return Decimal((await conn.execute(query)).scalar_one())


async def page(
    conn: AsyncConnection,
    account_id: str,
    limit: int,
    cursor: str | None,
    as_of: datetime | None,
) -> tuple[list[tuple[Any, Decimal]], str | None]:
    """Up to ``limit`` movements before ``cursor``, newest first, each with the balance
    after it; and the cursor of the next page (``None`` on the last)."""
    query = select(credit_transactions).where(_t.account_id == account_id)
    before = cursor_value(cursor)
    if before is not None:
        query = query.where(_t.seq < before)
    if as_of is not None:
        query = query.where(_t.created_at < as_of)
    rows = list((await conn.execute(query.order_by(_t.seq.desc()).limit(limit + 1))).all())
    more = len(rows) > limit
    rows = rows[:limit]
    if not rows:
        return [], None
    balance = await _balance_through(conn, account_id, rows[0].seq)
    out = []
    for row in rows:
        out.append((row, balance))
        balance -= row.amount
    return out, str(rows[-1].seq) if more else None


async def csv_lines(
    engine: AsyncEngine, account_id: str, as_of: datetime | None, batch: int = 1000
) -> AsyncIterator[str]:
    """The whole statement as CSV, oldest first, read in batches (never all at once)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(COLUMNS)
    yield out.getvalue()
    balance = Decimal(0)
    after = 0
    while True:
        query = select(credit_transactions).where(_t.account_id == account_id, _t.seq > after)
        if as_of is not None:
            query = query.where(_t.created_at < as_of)
        async with engine.connect() as conn:
            rows = (await conn.execute(query.order_by(_t.seq).limit(batch))).all()
        if not rows:
            return
        out.seek(0)
        out.truncate()
        for row in rows:
            balance += row.amount
            writer.writerow(_cells(row, balance))
        after = rows[-1].seq
        yield out.getvalue()


def _cells(row: Any, balance: Decimal) -> list[str]:
    return [
        str(row.seq), row.id, row.key, rfc3339(row.created_at) or "", row.kind,
        format_usd(row.amount), format_usd(balance), row.category or "", row.lot_id or "",
        row.request_id or "",
        row.payment_intent or "", row.stripe_event or "", row.reverses or "", _text(row.memo),
    ]  # fmt: skip


def _text(value: str | None) -> str:
    """Free text as a spreadsheet shows it, never as a formula it would run."""
    if value and value[0] in "=+-@\t\r":
        return "'" + value
    return value or ""
