"""The session log's hot writes, on the pooled connection's own driver (aiosqlite or
asyncpg) instead of through SQLAlchemy's statement machinery.

A message's way to its first streamed token writes the log twice — the client's event
(with a look at what of its session still waits to be published, and then its mark),
and the reply's first delta — and each write is a short transaction of two or three
statements. Through SQLAlchemy's async layer such a transaction costs about three times
what the driver does on its own (measured: 1.5 ms against 0.5 ms on SQLite, most of it
per statement), so these few statements, and only these, are written out for the driver.
They are the same as ``sessions.append(fresh=True)``, ``outbox.waiting`` and
``outbox.mark`` (tests/agents/test_rawlog.py holds them to it on both databases), and
store values the way the columns' types do: SQLite keeps naive UTC times as text and
JSON as text, Postgres takes aware times and JSON as text.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import weakref
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from tollhouse.agents import sessions
from tollhouse.agents.models import UNPUBLISHED
from tollhouse.db.writes import lock_of
from tollhouse.errors import NotFound

_NEXT = {
    "sqlite": "UPDATE agent_sessions SET last_seq = last_seq + 1, updated_at = ? "
    "WHERE id = ? RETURNING last_seq",
    "postgresql": "UPDATE agent_sessions SET last_seq = last_seq + 1, updated_at = $1 "
    "WHERE id = $2 RETURNING last_seq",
}
_INSERT = {
    "sqlite": "INSERT INTO session_events (event_id, session_id, seq, kind, type, body, "
    "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
    "postgresql": "INSERT INTO session_events (event_id, session_id, seq, kind, type, body, "
    "created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
}
_WAITING = {
    "sqlite": "SELECT event_id, seq, body, created_at FROM session_events "
    f"WHERE {UNPUBLISHED} AND session_id = ? AND seq <= ? ORDER BY seq LIMIT ?",
    "postgresql": "SELECT event_id, seq, body, created_at FROM session_events "
    f"WHERE {UNPUBLISHED} AND session_id = $1 AND seq <= $2 ORDER BY seq LIMIT $3",
}
_SQLITE_TIME = "%Y-%m-%d %H:%M:%S.%f"  # SQLAlchemy's DATETIME text on SQLite
_locks: weakref.WeakKeyDictionary[Any, asyncio.Lock] = weakref.WeakKeyDictionary()


@dataclass(frozen=True, slots=True)
class Waiting:
    """A client event of the log not yet published (``outbox.waiting``'s row)."""

    event_id: str
    seq: int
    body: dict[str, Any]
    created_at: datetime


@contextlib.asynccontextmanager
async def _driver(engine: AsyncEngine) -> AsyncIterator[tuple[str, Any]]:
    """A pooled connection's driver connection, one transaction on it at a time per
    process on SQLite (``db/writes.py`` says why); it goes back to the pool after."""
    dialect = engine.dialect.name
    lock: Any = lock_of(engine) if dialect == "sqlite" else contextlib.nullcontext()
    async with lock, engine.connect() as conn:
        raw = await conn.get_raw_connection()
        yield dialect, raw.driver_connection


def _time(dialect: str, moment: datetime) -> Any:
    moment = moment.astimezone(UTC)
    return moment.replace(tzinfo=None).strftime(_SQLITE_TIME) if dialect == "sqlite" else moment


async def append(
    engine: AsyncEngine,
    session_id: str,
    kind: str,
    event: dict[str, Any],
    waiting_limit: int = 0,
) -> tuple[int, list[Waiting]]:
    """Log ``event`` (made just now: its id is new) as the session's next event, in its
    own transaction; its seq, and — with ``waiting_limit`` — the session's client events
    through it still waiting to be published, by seq."""
    now = datetime.now(UTC)
    at = datetime.fromisoformat(event["created_at"]) if "created_at" in event else now
    row_type = sessions.type_of(kind, event)
    async with _driver(engine) as (dialect, db):
        if dialect == "sqlite":
            return await _sqlite_append(
                db, session_id, kind, row_type, event, now, at, waiting_limit
            )
        return await _pg_append(db, session_id, kind, row_type, event, now, at, waiting_limit)


async def _sqlite_append(
    db: Any,
    session_id: str,
    kind: str,
    row_type: str,
    event: dict[str, Any],
    now: datetime,
    at: datetime,
    waiting_limit: int,
) -> tuple[int, list[Waiting]]:
    values = (
        session_id,
        kind,
        row_type,
        event["event_id"],
        json.dumps(event),
        _time("sqlite", now),
        _time("sqlite", at),
        waiting_limit,
    )
    found = await _in_thread(db, _sqlite_transaction, *values)
    if found is None:
        raise NotFound(f"session {session_id!r} not found")
    seq, rows = found
    waiting = [Waiting(r[0], int(r[1]), json.loads(r[2]), _from_sqlite(r[3])) for r in rows]
    return seq, waiting


async def _in_thread(db: Any, function: Any, *args: Any) -> Any:
    """``function(sqlite3_connection, *args)`` run in the aiosqlite connection's own
    thread: the whole transaction in one hop to that thread and back, where one hop per
    statement cost twice as much. Through aiosqlite's queue (``_execute``), so it is
    ordered with everything else on that connection. An aiosqlite without that method
    is refused when the engine is made (``db.engine``), never half used."""
    return await db._execute(function, db._connection, *args)


def _sqlite_transaction(
    conn: sqlite3.Connection,
    session_id: str,
    kind: str,
    row_type: str,
    event_id: str,
    body: str,
    now: str,
    at: str,
    waiting_limit: int,
) -> tuple[int, list[Any]] | None:
    try:
        cursor = conn.execute(_NEXT["sqlite"], (now, session_id))
        found = cursor.fetchone()
        cursor.close()
        if found is None:
            conn.rollback()
            return None
        seq = int(found[0])
        conn.execute(_INSERT["sqlite"], (event_id, session_id, seq, kind, row_type, body, at))
        rows: list[Any] = []
        if waiting_limit:
            cursor = conn.execute(_WAITING["sqlite"], (session_id, seq, waiting_limit))
            rows = cursor.fetchall()
            cursor.close()
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return seq, rows


def _sqlite_mark(conn: sqlite3.Connection, now: str, event_ids: Sequence[str]) -> None:
    marks = ", ".join("?" for _ in event_ids)
    sql = (
        f"UPDATE session_events SET published_at = ? WHERE event_id IN ({marks}) "
        "AND published_at IS NULL"
    )
    try:
        conn.execute(sql, (now, *event_ids))
        conn.commit()
    except BaseException:
        conn.rollback()
        raise


async def _pg_append(
    db: Any,
    session_id: str,
    kind: str,
    row_type: str,
    event: dict[str, Any],
    now: datetime,
    at: datetime,
    waiting_limit: int,
) -> tuple[int, list[Waiting]]:
    async with db.transaction():
        found = await db.fetchval(_NEXT["postgresql"], now, session_id)
        if found is None:
            raise NotFound(f"session {session_id!r} not found")
        seq = int(found)
        body = json.dumps(event)
        await db.execute(
            _INSERT["postgresql"], event["event_id"], session_id, seq, kind, row_type, body, at
        )
        waiting: list[Waiting] = []
        if waiting_limit:
            rows = await db.fetch(_WAITING["postgresql"], session_id, seq, waiting_limit)
            waiting = [Waiting(r[0], int(r[1]), _json(r[2]), r[3].astimezone(UTC)) for r in rows]
    return seq, waiting


def _json(value: Any) -> dict[str, Any]:
    found: dict[str, Any] = value if isinstance(value, dict) else json.loads(value)
    return found


def _from_sqlite(text: str) -> datetime:
    return datetime.strptime(text, _SQLITE_TIME).replace(tzinfo=UTC)


async def mark(engine: AsyncEngine, event_ids: Sequence[str]) -> None:
    """``outbox.mark`` in its own transaction."""
    if not event_ids:
        return
    now = datetime.now(UTC)
    async with _driver(engine) as (dialect, db):
        if dialect == "sqlite":
            await _in_thread(db, _sqlite_mark, _time("sqlite", now), list(event_ids))
        else:
            await db.execute(
                "UPDATE session_events SET published_at = $1 WHERE event_id = ANY($2::text[]) "
                "AND published_at IS NULL",
                now,
                list(event_ids),
            )
