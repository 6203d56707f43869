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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection

from tollhouse.credits.models import credit_accounts, credit_legs, credit_transactions

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


def _insert(conn: AsyncConnection) -> Any:
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    return insert(credit_transactions)


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
    statement = (
        _insert(conn)
        .on_conflict_do_nothing(index_elements=["key"])
        .returning(credit_transactions.c.seq, credit_transactions.c.key)
    )
    result = await conn.execute(statement, [m.row() for m in by_key.values()])
    booked = sorted((seq, by_key[key]) for seq, key in result.all())
    if not booked:
        return []
    legs = []
    for seq, m in booked:
        legs.append(
            {
                "transaction_seq": seq,
                "leg": 0,
                "ledger_account": ledger_account(m.account_id),
                "amount": m.amount,
            }
        )
        legs.append(
            {
                "transaction_seq": seq,
                "leg": 1,
                "ledger_account": counterpart(m.kind, m.category),
                "amount": -m.amount,
            }
        )
    await conn.execute(credit_legs.insert(), legs)
    await _project(conn, [m for _, m in booked])
    return booked


async def _lock(conn: AsyncConnection, account_ids: set[str]) -> None:
    """Hold the accounts (in id order, as ``_project`` and ``lots.allocate`` take them)
    before numbering their movements. Postgres numbers a movement when it is inserted
    and shows it when it commits; an allocation reading the account's movements while
    another transaction held a smaller number uncommitted would move ``allocated_seq``
    past it and never draw it. Numbered under the account's lock, an account's movements
    commit in the order of their numbers. (SQLite runs one writer at a time.)"""
    if conn.dialect.name != "postgresql":
        return
    a = credit_accounts.c
    await conn.execute(
        select(a.id).where(a.id.in_(sorted(account_ids))).order_by(a.id).with_for_update()
    )


async def _project(conn: AsyncConnection, movements: list[Movement]) -> None:
    """Move each account's projections by what was booked; accounts in id order, so two
    writers touching the same accounts lock them in the same order (no deadlock)."""
    spent: dict[str, Decimal] = defaultdict(Decimal)
    funded: dict[str, Decimal] = defaultdict(Decimal)
    for m in movements:
        if m.kind == "post":
            spent[m.account_id] -= m.amount  # a post's amount is negative
        else:
            funded[m.account_id] += m.amount
    now = datetime.now(UTC)
    a = credit_accounts.c
    for account_id in sorted(spent.keys() | funded.keys()):
        values: dict[str, Any] = {"updated_at": now}
        if account_id in spent:
            values["spent"] = a.spent + spent[account_id]
        if account_id in funded:
            values["funded"] = a.funded + funded[account_id]
            values["revision"] = a.revision + 1
        await conn.execute(update(credit_accounts).where(a.id == account_id).values(**values))


def posts_of(rows: Iterable[Mapping[str, Any]]) -> list[Movement]:
    """The usage posts a batch of usage-record rows carries: one per record a prepaid
    account paid for, keyed by the request id (a record written twice posts once)."""
    return [
        Movement(
            account_id=row["credit_account_id"],
            kind="post",
            amount=-row["cost"],
            key=f"post:{row['id']}",
            request_id=row["id"],
            created_at=row["created_at"],
        )
        for row in rows
        if row.get("credit_account_id") and row["cost"]
    ]


async def post_usage(conn: AsyncConnection, rows: list[dict[str, Any]]) -> None:
    """Book the posts of usage records in the transaction that writes them (the usage
    recorder calls this), so the journal and the ledger cannot disagree."""
    posts = posts_of(rows)
    if posts:
        await book_many(conn, posts)
