"""Accounts and grants: the writes behind the credits admin API and CLI.

Functions take a connection and run in the caller's transaction. Every write that
changes what admission may spend (funding, the overdraft limit) also bumps the
governance change version, so every running server reloads its snapshot (at once in
the process that wrote, within one poll interval elsewhere).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from tollhouse.credits import lots
from tollhouse.credits.journal import Movement, book, new_id
from tollhouse.credits.models import (
    credit_accounts,
    credit_lots,
    credit_topups,
    credit_transactions,
)
from tollhouse.credits.schemas import AccountCreate, AccountUpdate, GrantCreate
from tollhouse.errors import Conflict, NotFound, ValidationFailed
from tollhouse.governance.models import customers, teams, virtual_keys
from tollhouse.governance.service import bump_version

ZERO = Decimal(0)
_a = credit_accounts.c
_l = credit_lots.c
_OWNERS = {"customer": customers, "team": teams, "key": virtual_keys}


@dataclass(frozen=True, slots=True)
class Balance:
    total: Decimal  # funded − spent: what the journal holds
    reserved: Decimal  # held by requests in flight (the meter's)
    available: Decimal  # total − reserved


def balance_of(account: Any, live: tuple[Decimal, Decimal] | None) -> Balance:
    """The balance from the journal's projections, or, given admission's live usage of
    the account (settled, held), from that: settles land there before the usage
    recorder writes their posts, so the live figure is never behind."""
    spent, reserved = account.spent, ZERO
    if live is not None:
        spent, reserved = max(live[0], spent), live[1]
    total = account.funded - spent
    return Balance(total, reserved, total - reserved)


async def get_account(conn: AsyncConnection, account_id: str) -> Any:
    row = (await conn.execute(select(credit_accounts).where(_a.id == account_id))).one_or_none()
    if row is None:
        raise NotFound(f"credit account {account_id!r} not found")
    return row


async def list_accounts(
    conn: AsyncConnection, owner_type: str | None = None, owner_id: str | None = None
) -> list[Any]:
    query = select(credit_accounts).order_by(_a.created_at, _a.id)
    if owner_type is not None:
        query = query.where(_a.owner_type == owner_type)
    if owner_id is not None:
        query = query.where(_a.owner_id == owner_id)
    return list((await conn.execute(query)).all())


async def create_account(conn: AsyncConnection, body: AccountCreate) -> Any:
    owner = _OWNERS[body.owner_type]
    found = await conn.execute(select(owner.c.id).where(owner.c.id == body.owner_id))
    if found.first() is None:
        raise ValidationFailed(
            f"owner_id: {body.owner_type} {body.owner_id!r} does not exist", param="owner_id"
        )
    await bump_version(conn)
    now = datetime.now(UTC)
    account_id = new_id("acct")
    auto = body.auto_topup
    values: dict[str, Any] = {
        "id": account_id,
        "owner_type": body.owner_type,
        "owner_id": body.owner_id,
        "overdraft_limit": body.overdraft_limit,
        "funded": ZERO,
        "spent": ZERO,
        "revision": 1,
        "allocated_seq": 0,
        "debt": ZERO,
        "low_balance": body.low_balance,
        "alert_state": "ok",
        "alert_crossings": 0,
        "auto_topup_enabled": bool(auto and auto.enabled),
        "auto_topup_threshold": auto.threshold if auto else None,
        "auto_topup_amount": auto.amount if auto else None,
        "auto_topup_monthly_cap": auto.monthly_cap if auto else None,
        "auto_topup_failures": 0,
        "auto_topup_disabled_reason": None,
        "auto_topup_skipped_reason": None,
        "stripe_customer": auto.stripe_customer if auto else None,
        "stripe_payment_method": auto.stripe_payment_method if auto else None,
        "created_at": now,
        "updated_at": now,
    }
    try:
        async with conn.begin_nested():
            await conn.execute(credit_accounts.insert().values(**values))
    except IntegrityError:
        raise Conflict(
            f"{body.owner_type} {body.owner_id!r} already has a credit account", param="owner_id"
        ) from None
    return await get_account(conn, account_id)


async def update_account(conn: AsyncConnection, account_id: str, body: AccountUpdate) -> Any:
    account = await get_account(conn, account_id)
    given = body.given()
    values: dict[str, Any] = {"updated_at": datetime.now(UTC)}
    if "overdraft_limit" in given and body.overdraft_limit != account.overdraft_limit:
        await bump_version(conn)
        values["overdraft_limit"] = body.overdraft_limit
        values["revision"] = _a.revision + 1
    if "low_balance" in given:
        values["low_balance"] = body.low_balance
    auto = body.auto_topup
    if auto is not None:
        merged = auto.given()
        columns = {
            "enabled": "auto_topup_enabled",
            "threshold": "auto_topup_threshold",
            "amount": "auto_topup_amount",
            "monthly_cap": "auto_topup_monthly_cap",
            "stripe_customer": "stripe_customer",
            "stripe_payment_method": "stripe_payment_method",
        }
        for field, column in columns.items():
            if field in merged:
                values[column] = merged[field]
        enabled = merged.get("enabled", account.auto_topup_enabled)
        threshold = merged.get("threshold", account.auto_topup_threshold)
        amount = merged.get("amount", account.auto_topup_amount)
        if enabled and (threshold is None or amount is None):
            raise ValidationFailed(
                "auto_topup: enabled needs threshold and amount", param="auto_topup"
            )
        if merged.get("enabled"):
            # Turning it on again is how an operator answers "disabled after failures".
            values["auto_topup_failures"] = 0
            values["auto_topup_disabled_reason"] = None
            values["auto_topup_skipped_reason"] = None
    await conn.execute(update(credit_accounts).where(_a.id == account_id).values(**values))
    return await get_account(conn, account_id)


async def grant(
    conn: AsyncConnection,
    account_id: str,
    body: GrantCreate,
    idempotency_key: str | None,
    now: datetime | None = None,
) -> tuple[Any, bool]:
    """Put a grant on the account; returns its lot and whether it is new. The same
    ``Idempotency-Key`` answers the first grant again (a different body under it: 409)."""
    now = now or datetime.now(UTC)
    await get_account(conn, account_id)
    key = f"grant:{account_id}:{idempotency_key}" if idempotency_key else None
    if key is not None:
        found = (
            await conn.execute(select(credit_lots).where(_l.idempotency_key == key))
        ).one_or_none()
        if found is not None:
            return _same_grant(found, body), False
        # A negative adjustment keeps no lot: its key is its journal movement's.
        debit = await _movement_keyed(conn, key)
        if debit is not None:
            return _same_debit(debit, body), False
    effective = body.effective_at or now
    if body.expires_at is not None and body.expires_at <= effective:
        raise ValidationFailed("expires_at must be after effective_at", param="expires_at")
    lot_id = new_id("lot")
    await bump_version(conn)
    if body.amount < 0:
        # A negative adjustment takes credit away: a debit, drawn from lots like usage.
        movement = _movement(account_id, body, key or f"grant:{lot_id}", None, now)
        seq = await book(conn, movement)
        debit = await _movement_keyed(conn, movement.key)
        if seq is None:  # the same key, booked concurrently: answer that one
            return _same_debit(debit, body), False
        return _negative_grant(debit, body.priority), True
    row = {
        "id": lot_id,
        "account_id": account_id,
        "source": body.category,
        "amount": body.amount,
        "remaining": body.amount,
        "priority": body.priority,
        "effective_at": effective,
        "expires_at": body.expires_at,
        "status": "scheduled",
        "idempotency_key": key,
        "memo": body.memo,
        "created_at": now,
    }
    try:
        async with conn.begin_nested():
            await conn.execute(credit_lots.insert().values(**row))
    except IntegrityError:  # the same key, granted concurrently: answer that one
        found = (await conn.execute(select(credit_lots).where(_l.idempotency_key == key))).one()
        return _same_grant(found, body), False
    lot = (await conn.execute(select(credit_lots).where(_l.id == lot_id))).one()
    if effective <= now:
        await lots.fund(conn, lot, now)
        lot = (await conn.execute(select(credit_lots).where(_l.id == lot_id))).one()
    return lot, True


def _movement(
    account_id: str, body: GrantCreate, key: str, lot_id: str | None, now: datetime
) -> Movement:
    return Movement(
        account_id=account_id,
        kind="grant",
        amount=body.amount,
        key=key,
        category=body.category,
        lot_id=lot_id,
        memo=body.memo,
        created_at=now,
    )


@dataclass(frozen=True, slots=True)
class _Debit:
    """A negative adjustment shown like a lot (it funds nothing, so none is stored)."""

    id: str
    account_id: str
    source: str
    amount: Decimal
    remaining: Decimal
    priority: int
    effective_at: datetime
    expires_at: datetime | None
    status: str
    memo: str | None
    created_at: datetime


def _negative_grant(movement: Any, priority: int) -> _Debit:
    """A negative adjustment as a grant: its id is its journal movement's."""
    return _Debit(
        movement.id,
        movement.account_id,
        movement.category,
        movement.amount,
        ZERO,
        priority,
        movement.created_at,
        None,
        "booked",
        movement.memo,
        movement.created_at,
    )


async def _movement_keyed(conn: AsyncConnection, key: str) -> Any:
    t = credit_transactions.c
    return (await conn.execute(select(credit_transactions).where(t.key == key))).one_or_none()


def _same_grant(found: Any, body: GrantCreate) -> Any:
    if (found.amount, found.source, found.priority) != (body.amount, body.category, body.priority):
        raise _different_grant()
    return found


def _same_debit(found: Any, body: GrantCreate) -> _Debit:
    if found.kind != "grant" or (found.amount, found.category) != (body.amount, body.category):
        raise _different_grant()
    return _negative_grant(found, body.priority)


def _different_grant() -> Conflict:
    return Conflict(
        "this Idempotency-Key was used for a different grant on this account",
        param="Idempotency-Key",
    )


async def run_due(conn: AsyncConnection, now: datetime) -> tuple[int, int]:
    """Book grants that took effect and expiries that fell due; returns how many of each."""
    starting, ending = await lots.due(conn, now)
    if starting or ending:
        await bump_version(conn)  # before any account is locked, as every write does
    for lot in starting:
        await lots.fund(conn, lot, now)
    for lot_id in ending:
        await lots.expire(conn, lot_id, now)
    return len(starting), len(ending)


async def topups(conn: AsyncConnection, account_id: str, limit: int = 100) -> list[Any]:
    t = credit_topups.c
    query = (
        select(credit_topups)
        .where(t.account_id == account_id)
        .order_by(t.created_at.desc(), t.id)
        .limit(limit)
    )
    return list((await conn.execute(query)).all())


async def journal_totals(conn: AsyncConnection, account_id: str) -> tuple[Decimal, Decimal]:
    """(funded, spent) summed from the journal itself, for checks against projections."""
    t = credit_transactions.c
    rows = await conn.execute(
        select(t.kind, func.coalesce(func.sum(t.amount), 0))
        .where(t.account_id == account_id)
        .group_by(t.kind)
    )
    funded = spent = ZERO
    for kind, total in rows:
        if kind == "post":
            spent -= Decimal(total)
        else:
            funded += Decimal(total)
    return funded, spent


async def open_topup(conn: AsyncConnection, account_id: str, kind: str, amount: Decimal) -> Any:
    """A pending top-up: its id is what Stripe's idempotency key and metadata carry."""
    now = datetime.now(UTC)
    topup_id = new_id("top")
    await conn.execute(
        credit_topups.insert().values(
            id=topup_id,
            account_id=account_id,
            kind=kind,
            amount=amount,
            status="pending",
            created_at=now,
            updated_at=now,
        )
    )
    t = credit_topups.c
    return (await conn.execute(select(credit_topups).where(t.id == topup_id))).one()


async def checkout_opened(conn: AsyncConnection, topup_id: str, session: Any) -> None:
    t = credit_topups.c
    await conn.execute(
        update(credit_topups)
        .where(t.id == topup_id)
        .values(
            session_id=session.session_id,
            checkout_url=session.url,
            expires_at=session.expires_at,
            updated_at=datetime.now(UTC),
        )
    )
