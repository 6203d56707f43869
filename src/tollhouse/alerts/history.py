"""The alert history: events, newest first, a page at a time, and each event's
deliveries with their attempts — what ``GET /api/alerts`` and the dashboard show.

A page is one keyset query on ``(created_at, id)`` (the index on ``created_at`` serves
it), with the same opaque cursor as every other listing (``ledger.service``), so pages
neither skip nor repeat an alert while new ones are written. Counting is a separate
call: the API answers ``total``, the dashboard does not ask.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from tollhouse.alerts.models import alert_attempts, alert_deliveries, alert_events
from tollhouse.errors import NotFound
from tollhouse.ledger.service import decode_cursor, encode_cursor

ALERT_NOT_FOUND = "Alert not found"
_e = alert_events.c


@dataclass(frozen=True, slots=True)
class AlertFilter:
    """Which alerts: ``None`` is any. ``scope_kind`` and ``scope_id`` are the budget's
    (or a credit account owner's) kind and id."""

    event: str | None = None
    level: str | None = None
    scope_kind: str | None = None
    scope_id: str | None = None

    def clauses(self) -> list[Any]:
        wanted = {
            _e.event: self.event,
            _e.level: self.level,
            _e.scope_kind: self.scope_kind,
            _e.scope_id: self.scope_id,
        }
        return [column == value for column, value in wanted.items() if value is not None]


async def list_events(
    conn: AsyncConnection, where: AlertFilter, limit: int, cursor: str | None = None
) -> tuple[list[Any], str | None]:
    """Up to ``limit`` events, newest first, and the next page's cursor (``None``: last)."""
    clauses = where.clauses()
    if cursor:
        at, last_id = decode_cursor(cursor)
        clauses.append(or_(_e.created_at < at, and_(_e.created_at == at, _e.id < last_id)))
    query = (
        select(alert_events)
        .where(*clauses)
        .order_by(_e.created_at.desc(), _e.id.desc())
        .limit(limit + 1)
    )
    rows = list((await conn.execute(query)).all())
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, encode_cursor(rows[-1].created_at, rows[-1].id)


async def count_events(conn: AsyncConnection, where: AlertFilter) -> int:
    query = select(func.count()).select_from(alert_events).where(*where.clauses())
    return int((await conn.execute(query)).scalar_one())


async def get_event(conn: AsyncConnection, event_id: str) -> Any:
    """One event's row; ``NotFound`` if unknown."""
    row = (await conn.execute(select(alert_events).where(_e.id == event_id))).first()
    if row is None:
        raise NotFound(ALERT_NOT_FOUND)
    return row


async def list_deliveries(conn: AsyncConnection, event_id: str) -> list[tuple[Any, list[Any]]]:
    """One event's deliveries, each with its attempts in order; ``NotFound`` if unknown."""
    d, a = alert_deliveries.c, alert_attempts.c
    await get_event(conn, event_id)
    deliveries = (await conn.execute(select(alert_deliveries).where(d.event_id == event_id))).all()
    ids = [row.id for row in deliveries]
    attempts = (
        await conn.execute(
            select(alert_attempts).where(a.delivery_id.in_(ids)).order_by(a.delivery_id, a.attempt)
        )
    ).all()
    by_delivery: dict[str, list[Any]] = {i: [] for i in ids}
    for row in attempts:
        by_delivery[row.delivery_id].append(row)
    return [(row, by_delivery[row.id]) for row in deliveries]
