"""Lots: what each grant or purchase put on an account, and what is left of it.

A lot is funded by one journal movement (``grant`` or ``purchase``). Spending draws
lots down in a fixed order — **priority** (lower first), then **soonest expiry** (a lot
that never expires last), then age — so promotional credit that is about to lapse is
used before paid credit that keeps. What spending takes beyond every lot is the
account's ``debt`` (its overdraft), repaid first by the next lot.

Drawing happens after the fact, off the request path: ``allocate`` walks the journal's
debits since the account's ``allocated_seq`` in order. It runs before every lot is
funded (and after, to repay the debt from it), so spending is drawn from the lots there
were when it was booked, whenever allocation happens to run; and before every expiry,
so an expiring lot gives up only what spending has not already used. A grant effective
later is *scheduled*: its money is booked when it takes effect.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from tollhouse.credits.journal import Movement, book
from tollhouse.credits.models import credit_accounts, credit_lots, credit_transactions

ZERO = Decimal(0)
_l = credit_lots.c
_t = credit_transactions.c
_a = credit_accounts.c


def draw_order(rows: list[Any]) -> list[Any]:
    """Lots in the order spending draws them."""
    never = datetime.max.replace(tzinfo=UTC)
    return sorted(rows, key=lambda r: (r.priority, r.expires_at or never, r.created_at, r.id))


async def lock_account(conn: AsyncConnection, account_id: str) -> Any:
    """The account row, locked for the rest of the transaction: allocation and expiry of
    one account never run side by side (SQLite serialises writers on its own)."""
    query = select(credit_accounts).where(_a.id == account_id)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    return (await conn.execute(query)).one_or_none()


async def allocate(conn: AsyncConnection, account_id: str) -> None:
    """Draw the account's lots down by every debit booked since the last allocation."""
    account = await lock_account(conn, account_id)
    if account is None:
        return
    debits = (
        await conn.execute(
            select(_t.seq, _t.kind, _t.amount, _t.lot_id)
            .where(_t.account_id == account_id, _t.seq > account.allocated_seq)
            .order_by(_t.seq)
        )
    ).all()
    lots = draw_order(
        list(
            (
                await conn.execute(
                    select(credit_lots).where(_l.account_id == account_id, _l.status == "active")
                )
            ).all()
        )
    )
    remaining = {lot.id: lot.remaining for lot in lots}
    debt = account.debt
    last = account.allocated_seq
    for debit in debits:
        last = debit.seq
        if debit.kind == "reversal" and debit.lot_id in remaining:
            remaining[debit.lot_id] += debit.amount  # a refund or dispute undone
            continue
        if debit.amount >= 0 or debit.kind == "expire":
            continue  # credits fund lots when booked; an expiry already emptied its lot
        owed = -debit.amount
        if debit.lot_id is not None and debit.lot_id in remaining:
            # A refund or dispute takes back the purchase it answers, first.
            taken = min(owed, remaining[debit.lot_id])
            remaining[debit.lot_id] -= taken
            owed -= taken
        debt += owed
    for lot in lots:
        if debt <= 0:
            break
        taken = min(debt, remaining[lot.id])
        remaining[lot.id] -= taken
        debt -= taken
    for lot in lots:
        if remaining[lot.id] != lot.remaining:
            await conn.execute(
                update(credit_lots).where(_l.id == lot.id).values(remaining=remaining[lot.id])
            )
    await conn.execute(
        update(credit_accounts).where(_a.id == account_id).values(allocated_seq=last, debt=debt)
    )


async def fund(conn: AsyncConnection, lot: Any, now: datetime) -> int | None:
    """Make a lot drawable, with the allocations around it: what was spent before it
    existed is drawn from the lots there were (allocated first), and only what none of
    them covered — the debt — is repaid from it (allocated after)."""
    await allocate(conn, lot.account_id)
    seq = await activate(conn, lot, now)
    await allocate(conn, lot.account_id)
    return seq


async def activate(conn: AsyncConnection, lot: Any, now: datetime) -> int | None:
    """Book a scheduled lot's money (once: its key is the lot's) and make it drawable."""
    seq = await book(
        conn,
        Movement(
            account_id=lot.account_id,
            kind="purchase" if lot.source == "purchase" else "grant",
            amount=lot.amount,
            key=f"fund:{lot.id}",
            category=None if lot.source == "purchase" else lot.source,
            lot_id=lot.id,
            memo=lot.memo,
            created_at=now,
        ),
    )
    await conn.execute(
        update(credit_lots).where(_l.id == lot.id, _l.status == "scheduled").values(status="active")
    )
    return seq


async def expire(conn: AsyncConnection, lot_id: str, now: datetime) -> Decimal:
    """Book what is left of an expired lot as ``expire`` (to breakage); returns it."""
    lot = (await conn.execute(select(credit_lots).where(_l.id == lot_id))).one()
    await allocate(conn, lot.account_id)
    lot = (await conn.execute(select(credit_lots).where(_l.id == lot_id))).one()
    if lot.status != "active":
        return ZERO
    left: Decimal = lot.remaining
    if left > 0:
        await book(
            conn,
            Movement(
                account_id=lot.account_id,
                kind="expire",
                amount=-left,
                key=f"expire:{lot.id}",
                category=None if lot.source == "purchase" else lot.source,
                lot_id=lot.id,
                created_at=now,
            ),
        )
    await conn.execute(
        update(credit_lots).where(_l.id == lot.id).values(status="expired", remaining=ZERO)
    )
    return left


async def due(conn: AsyncConnection, now: datetime) -> tuple[list[Any], list[str]]:
    """Scheduled lots whose time has come, and ids of active lots past their expiry."""
    starting = (
        await conn.execute(
            select(credit_lots).where(_l.status == "scheduled", _l.effective_at <= now)
        )
    ).all()
    ending = (
        await conn.execute(
            select(_l.id).where(
                _l.status.in_(("active", "scheduled")),
                _l.expires_at.is_not(None),
                _l.expires_at <= now,
            )
        )
    ).scalars()
    return list(starting), list(ending)


async def open_lots(conn: AsyncConnection, account_id: str) -> list[Any]:
    rows = await conn.execute(
        select(credit_lots).where(
            _l.account_id == account_id,
            or_(_l.status == "scheduled", and_(_l.status == "active", _l.remaining > 0)),
        )
    )
    return draw_order(list(rows.all()))
