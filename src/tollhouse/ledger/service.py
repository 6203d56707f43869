"""Reading the ledger: filtered, paginated listings and spend summaries.

Listings are newest first and paginated by keyset (``created_at``, ``id``), so a page
is as fast at the millionth record as at the first and new records never shift pages.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection

from tollhouse.errors import NotFound, ValidationFailed
from tollhouse.ledger.models import usage_records as t

if TYPE_CHECKING:
    from tollhouse.ledger.schemas import UsageQuery

GroupBy = Literal["key", "team", "customer", "model", "provider", "day"]


@dataclass(frozen=True)
class UsageFilter:
    key_id: str | None = None
    team_id: str | None = None
    customer_id: str | None = None
    credit_account_id: str | None = None
    credit_post: str | None = None
    session_id: str | None = None
    model: str | None = None
    status: str | None = None
    min_cost: Decimal | None = None
    max_cost: Decimal | None = None
    since: datetime | None = None
    until: datetime | None = None

    @classmethod
    def of(cls, q: UsageQuery) -> UsageFilter:
        """The filters of ``GET /api/usage``'s query (the dashboard's log reads the same)."""
        return cls(
            key_id=q.key_id or q.virtual_key_id,
            team_id=q.team_id,
            customer_id=q.customer_id,
            credit_account_id=q.credit_account_id,
            credit_post=q.credit_post,
            session_id=q.session_id,
            model=q.model,
            status=q.status,
            min_cost=q.min_cost,
            max_cost=q.max_cost,
            since=q.since,
            until=q.until,
        )

    def clauses(self) -> list[Any]:
        clauses: list[Any] = []
        for column, value in (
            (t.c.key_id, self.key_id),
            (t.c.team_id, self.team_id),
            (t.c.customer_id, self.customer_id),
            (t.c.credit_account_id, self.credit_account_id),
            (t.c.credit_post, self.credit_post),
            (t.c.session_id, self.session_id),
            (t.c.model, self.model),
            (t.c.status, self.status),
        ):
            if value is not None:
                clauses.append(column == value)
        if self.min_cost is not None:
            clauses.append(t.c.cost >= self.min_cost)
        if self.max_cost is not None:
            clauses.append(t.c.cost <= self.max_cost)
        if self.since is not None:
            clauses.append(t.c.created_at >= self.since)
        if self.until is not None:
            clauses.append(t.c.created_at < self.until)
        return clauses


@dataclass(frozen=True)
class SpendRow:
    group: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cost: Decimal


def encode_cursor(created_at: datetime, record_id: str) -> str:
    raw = f"{created_at.isoformat()}|{record_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        stamp, _, record_id = base64.urlsafe_b64decode(padded).decode().partition("|")
        created_at = datetime.fromisoformat(stamp)
    except (ValueError, UnicodeDecodeError):
        created_at, record_id = None, ""
    if created_at is None or created_at.tzinfo is None or not record_id or "\x00" in record_id:
        raise ValidationFailed("cursor is not one this API returned", param="cursor")
    return created_at, record_id


async def list_usage(
    conn: AsyncConnection, where: UsageFilter, *, limit: int = 50, cursor: str | None = None
) -> tuple[list[Any], str | None]:
    """One page of records, newest first, and the cursor of the next page (or ``None``)."""
    clauses = where.clauses()
    if cursor:
        created_at, record_id = decode_cursor(cursor)
        # A row-value comparison, which Postgres reads off the (created_at, id) index; the
        # same condition spelt with OR read every newer record first (seconds, 45 days
        # back in ten million).
        clauses.append(tuple_(t.c.created_at, t.c.id) < tuple_(created_at, record_id))
    query = (
        select(t).where(*clauses).order_by(t.c.created_at.desc(), t.c.id.desc()).limit(limit + 1)
    )
    rows = list((await conn.execute(query)).all())
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        last = rows[-1]
        next_cursor = encode_cursor(last.created_at, last.id)
    return rows, next_cursor


async def count_usage(conn: AsyncConnection, where: UsageFilter) -> int:
    query = select(func.count()).select_from(t).where(*where.clauses())
    return int((await conn.execute(query)).scalar_one())


async def spend_by(conn: AsyncConnection, group: GroupBy, where: UsageFilter) -> list[SpendRow]:
    """Requests, tokens and exact spend grouped by scope, model or UTC day."""
    if group == "day":
        if conn.dialect.name == "sqlite":
            column: Any = func.strftime("%Y-%m-%d", t.c.created_at)
        else:
            column = func.to_char(func.timezone("UTC", t.c.created_at), "YYYY-MM-DD")
    else:
        column = {
            "key": t.c.key_id,
            "team": t.c.team_id,
            "customer": t.c.customer_id,
            "model": t.c.model,
            "provider": t.c.provider,
        }[group]
    label = column.label("grp")
    query = (
        select(
            label,
            func.count().label("requests"),
            func.coalesce(func.sum(t.c.prompt_tokens), 0).label("prompt_tokens"),
            func.coalesce(func.sum(t.c.completion_tokens), 0).label("completion_tokens"),
            func.coalesce(func.sum(t.c.cost), 0).label("cost"),
        )
        .where(*where.clauses())
        .group_by(label)
        .order_by(label)
    )
    rows = (await conn.execute(query)).all()
    return [
        SpendRow(
            group=str(row.grp) if row.grp is not None else "-",
            requests=int(row.requests),
            prompt_tokens=int(row.prompt_tokens),
            completion_tokens=int(row.completion_tokens),
            # SUM over a Money column comes back through the Money type: already Decimal.
            cost=row.cost if row.cost is not None else Decimal(0),
        )
        for row in rows
    ]


async def get_usage(conn: AsyncConnection, record_id: str) -> Any:
    """One record by id; ``NotFound`` when the ledger has none."""
    row = (await conn.execute(select(t).where(t.c.id == record_id))).one_or_none()
    if row is None:
        raise NotFound(f"usage record {record_id!r} not found")
    return row
