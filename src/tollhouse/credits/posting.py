"""Usage posts: what prepaid accounts paid, booked with the usage records that say so.

The usage recorder writes records in batches (every ``ledger_flush_interval_ms``). In
the same transaction, the records of a batch that a prepaid account paid for are posted
to the journal as **one movement per account**: minus the sum of their costs, keyed
``post:<id of the first of them>``. Each of those records names its post
(``usage_records.credit_post``), so the usage ledger keeps the detail of every request
and the journal one line per account and batch — what billing ledgers do (a wallet
transaction per invoice, not per event), and what keeps a prepaid request within a few
microseconds of a governed one (a journal row and two legs per request cost more than the
request's own usage record).

Exactly once. The insert skips a record written before (a batch replayed from the spool
after a commit whose answer was lost), so the post covers the records the insert wrote,
which it returns: all of them, almost always, under the key given to the rows before
the insert. When only some are new, they are posted under the key of the first new one
and their ``credit_post`` set to it. A key names a record written in the transaction that
books it, so two posts never share one, and a record is never in two posts.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncConnection

from tollhouse.credits.journal import Movement, book_many
from tollhouse.ledger.models import usage_records

Row = dict[str, Any]


def paid(row: Row) -> bool:
    """Whether the record is charged to a prepaid account (a free request is not)."""
    return bool(row.get("credit_account_id") and row["cost"])


class UsagePosts:
    """The usage recorder's companion (``ledger.recorder.Companion``)."""

    def prepare(self, rows: list[Row]) -> bool:
        """Give each paid record its post's key, before the insert; whether any is paid."""
        keys: dict[str, str] = {}
        found = False
        for row in rows:
            if paid(row):
                row["credit_post"] = keys.setdefault(row["credit_account_id"], f"post:{row['id']}")
                found = True
            else:
                row["credit_post"] = None
        return found

    async def book(self, conn: AsyncConnection, rows: list[Row], written: set[str]) -> None:
        """Post what the insert wrote (``written``: the ids of the rows it inserted)."""
        groups: dict[str, list[Row]] = {}
        for row in rows:
            key = row.get("credit_post")
            if key is not None and row["id"] in written:
                groups.setdefault(key, []).append(row)
        movements = []
        for key, group in groups.items():
            if group[0]["credit_post"] != f"post:{group[0]['id']}":
                # The record the key names was written before: this batch was replayed.
                key = await _rekey(conn, group)
            movements.append(_post(key, group))
        if movements:
            await book_many(conn, movements)


async def _rekey(conn: AsyncConnection, group: list[Row]) -> str:
    key = f"post:{group[0]['id']}"
    ids = [row["id"] for row in group]
    u = usage_records.c
    await conn.execute(update(usage_records).where(u.id.in_(ids)).values(credit_post=key))
    for row in group:
        row["credit_post"] = key
    return key


def _post(key: str, group: Iterable[Row]) -> Movement:
    rows = list(group)
    latest: datetime = max(row["created_at"] for row in rows)
    return Movement(
        account_id=rows[0]["credit_account_id"],
        kind="post",
        amount=-sum((row["cost"] for row in rows), Decimal(0)),
        key=key,
        memo=f"usage: {len(rows)} request{'s' if len(rows) != 1 else ''}",
        created_at=latest,
    )
