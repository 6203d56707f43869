"""The journal: booking a movement, exactly once, balanced, with its projections.

Every movement is one transaction row and two legs that sum to zero: the prepaid
account's leg (``credits:<account id>``) and a platform counter-account's — where the
money came from or went to. A purchase moves value from ``platform:stripe`` to the
account, a grant from ``platform:grants:<category>``, a post (usage) from the account
to ``platform:revenue``, an expiry to ``platform:breakage``, a refund or a dispute back
to ``platform:stripe``.

A movement's ``key`` is unique: booking the same key again books nothing and returns
``None`` (``INSERT … ON CONFLICT DO NOTHING``, decided by the database, never by a read
before the write). The account's projections move in the same transaction: ``spent``
for posts, ``funded`` (and ``revision``, which tells replicas that what admission may
spend has changed) for everything else.
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import bindparam, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from tollhouse.credits.models import credit_accounts, credit_legs, credit_transactions
from tollhouse.db.types import Money

Kind = Literal["purchase", "grant", "post", "expire", "refund", "dispute", "reversal"]
KINDS: tuple[Kind, ...] = ("purchase", "grant", "post", "expire", "refund", "dispute", "reversal")

_COUNTERPART: dict[Kind, str] = {
    "purchase": "platform:stripe",
    "post": "platform:revenue",
    "expire": "platform:breakage",
    "refund": "platform:stripe",
    "dispute": "platform:stripe",
    "reversal": "platform:stripe",
}


def ledger_account(account_id: str) -> str:
    """The journal's name for a prepaid account's leg."""
    return f"credits:{account_id}"


def counterpart(kind: Kind, category: str | None) -> str:
    if kind == "grant":
        return f"platform:grants:{category or 'adjustment'}"
    return _COUNTERPART[kind]


@dataclass(frozen=True, slots=True)
class Movement:
    """One movement on one account; ``amount`` is what it does to the balance."""

    account_id: str
    kind: Kind
    amount: Decimal
    key: str  # unique: the same key is booked once
    category: str | None = None
    lot_id: str | None = None
    request_id: str | None = None
    payment_intent: str | None = None
    stripe_event: str | None = None
    reverses: str | None = None
    memo: str | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def row(self) -> dict[str, Any]:
        return {
            "id": new_id("ctx"),
            "key": self.key,
            "account_id": self.account_id,
            "kind": self.kind,
            "amount": self.amount,
            "category": self.category,
            "lot_id": self.lot_id,
            "request_id": self.request_id,
            "payment_intent": self.payment_intent,
            "stripe_event": self.stripe_event,
            "reverses": self.reverses,
            "memo": self.memo,
            "created_at": self.created_at,
        }


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def _insert(dialect: str) -> Any:
    """The booking statement for ``dialect``, built once: statements are compared by
    their shape on every execution, so a batch reuses one instead of building its own."""
    statement = _INSERTS.get(dialect)
    if statement is None:
        insert = pg_insert if dialect == "postgresql" else sqlite_insert
        t = credit_transactions.c
        statement = (
            insert(credit_transactions)
            .on_conflict_do_nothing(index_elements=["key"])
            .returning(t.seq, t.key)
        )
        _INSERTS[dialect] = statement
    return statement


_INSERTS: dict[str, Any] = {}
_LEGS = credit_legs.insert()
_a = credit_accounts.c
# The projections, moved by what a batch booked: one row of parameters per account.
_SPEND = (
    update(credit_accounts)
    .where(_a.id == bindparam("account"))
    .values(spent=_a.spent + bindparam("by", type_=Money()), updated_at=bindparam("at"))
)
_FUND = (
    update(credit_accounts)
    .where(_a.id == bindparam("account"))
    .values(
        funded=_a.funded + bindparam("by", type_=Money()),
        revision=_a.revision + 1,
        updated_at=bindparam("at"),
    )
)


async def book(conn: AsyncConnection, movement: Movement) -> int | None:
    """Book ``movement`` in the caller's transaction; its sequence number, or ``None``
    when a movement with the same key is already in the journal."""
    booked = await book_many(conn, [movement])
    return booked[0][0] if booked else None


async def book_many(
    conn: AsyncConnection, movements: Iterable[Movement]
) -> list[tuple[int, Movement]]:
    """Book every movement whose key is new, in the caller's transaction; returns the
    booked ones with their sequence numbers (the others were booked before)."""
    by_key = {m.key: m for m in movements}
    if not by_key:
        return []
    await _lock(conn, {m.account_id for m in by_key.values()})
    result = await conn.execute(_insert(conn.dialect.name), [m.row() for m in by_key.values()])
    booked = sorted((seq, by_key[key]) for seq, key in result.all())
    if not booked:
        return []
    legs = []
    for seq, m in booked:
        account, other = ledger_account(m.account_id), counterpart(m.kind, m.category)
        legs.append(
            {"transaction_seq": seq, "leg": 0, "ledger_account": account, "amount": m.amount}
        )
        legs.append(
            {"transaction_seq": seq, "leg": 1, "ledger_account": other, "amount": -m.amount}
        )
    await conn.execute(_LEGS, legs)
    await _project(conn, [m for _, m in booked])
    return booked


async def _lock(conn: AsyncConnection, account_ids: set[str]) -> None:
    """Hold the accounts (in id order, as ``lots.allocate`` takes them) before numbering
    their movements. Postgres numbers a movement when it is inserted and shows it when
    it commits; an allocation reading the account's movements while another transaction
    held a smaller number uncommitted would move ``allocated_seq`` past it and never
    draw it. Numbered under the account's lock, an account's movements commit in the
    order of their numbers. (SQLite runs one writer at a time.)"""
    if conn.dialect.name != "postgresql":
        return
    await conn.execute(
        select(_a.id).where(_a.id.in_(sorted(account_ids))).order_by(_a.id).with_for_update()
    )


async def _project(conn: AsyncConnection, movements: list[Movement]) -> None:
    """Move each account's projections by what was booked (the accounts are locked
    already: ``_lock``), in one statement per projection."""
    spent: dict[str, Decimal] = defaultdict(Decimal)
    funded: dict[str, Decimal] = defaultdict(Decimal)
    for m in movements:
        if m.kind == "post":
            spent[m.account_id] -= m.amount  # a post's amount is negative
        else:
            funded[m.account_id] += m.amount
    now = datetime.now(UTC)
    for statement, moved in ((_SPEND, spent), (_FUND, funded)):
        if moved:
            rows = [{"account": i, "by": by, "at": now} for i, by in sorted(moved.items())]
            await conn.execute(statement, rows)
