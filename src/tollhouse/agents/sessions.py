"""Sessions and their event log: open, own, append, read back (docs/agents.md,
*Sessions*).

A session belongs to a **tenant**: the top of the opening key's chain (its customer,
else its team, else the key itself), so every key of a customer sees the customer's
sessions and no other tenant's — another tenant's session is a 404, never a 403 that
would say it exists. Functions take a connection and run in the caller's transaction.
The routes check the owner with ``cache.owned``, which caches what ``get`` reads.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from tollhouse.agents.models import agent_sessions, session_events
from tollhouse.errors import NotFound
from tollhouse.ledger.service import decode_cursor, encode_cursor

_a = agent_sessions.c
_e = session_events.c


def new_session_id() -> str:
    return f"ses_{uuid.uuid4().hex}"


def not_found(session_id: str) -> NotFound:
    """The one answer for a session that is not the caller's tenant's, or nobody's."""
    return NotFound(f"session {session_id!r} not found")


def type_of(kind: str, event: dict[str, Any]) -> str:
    """An event's ``type`` column: its own ``type``, else its kind (a ``tool_result``)."""
    return str(event.get("type", kind))


def tenant_of(key: Any) -> tuple[str, str]:
    """(kind, id) of the scope that owns a key's sessions."""
    top = key.chain[-1] if key.chain else key.scope
    return str(top.kind), str(top.id)


async def get(conn: AsyncConnection, session_id: str, tenant: tuple[str, str]) -> Any:
    """The session, if it is ``tenant``'s; a 404 otherwise (whoever else owns it)."""
    row = (
        await conn.execute(
            select(agent_sessions).where(
                _a.id == session_id, _a.tenant_kind == tenant[0], _a.tenant_id == tenant[1]
            )
        )
    ).one_or_none()
    if row is None:
        raise not_found(session_id)
    return row


async def row(conn: AsyncConnection, session_id: str) -> Any:
    """The session, whoever owns it (for the workers, which act for its key)."""
    found = (await conn.execute(select(agent_sessions).where(_a.id == session_id))).one_or_none()
    if found is None:
        raise not_found(session_id)
    return found


async def recent(
    conn: AsyncConnection, *, limit: int, cursor: str | None = None
) -> tuple[list[Any], str | None]:
    """Every tenant's sessions, newest first, ``limit`` at a time, and the next page's
    cursor (the operator's view: the dashboard; a client sees only its tenant's)."""
    query = select(agent_sessions)
    if cursor is not None:  # the same opaque cursor as every listing (time and id)
        at, last_id = decode_cursor(cursor)
        query = query.where(or_(_a.created_at < at, and_(_a.created_at == at, _a.id < last_id)))
    query = query.order_by(_a.created_at.desc(), _a.id.desc()).limit(limit + 1)
    rows = list((await conn.execute(query)).all())
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, encode_cursor(rows[-1].created_at, rows[-1].id)


async def last_seq(conn: AsyncConnection, session_id: str) -> int:
    """The seq of the session's newest event (0: none yet)."""
    found = await conn.scalar(select(_a.last_seq).where(_a.id == session_id))
    if found is None:
        raise not_found(session_id)
    return int(found)


async def open_session(
    conn: AsyncConnection, key: Any, persona_id: str | None, now: datetime | None = None
) -> Any:
    now = now or datetime.now(UTC)
    kind, tenant = tenant_of(key)
    session_id = new_session_id()
    await conn.execute(
        agent_sessions.insert().values(
            id=session_id,
            tenant_kind=kind,
            tenant_id=tenant,
            key_id=key.scope.id,
            persona_id=persona_id,
            status="idle",
            last_seq=0,
            created_at=now,
            updated_at=now,
        )
    )
    return await get(conn, session_id, (kind, tenant))


async def append(
    conn: AsyncConnection,
    session_id: str,
    kind: str,
    event: dict[str, Any],
    *,
    fresh: bool = False,
) -> int | None:
    """Write ``event`` as the session's next event; its seq, or ``None`` when it was
    written already (an event seen twice is written once). Taking the next seq locks
    the session's row, so a session's events are numbered one at a time.

    ``fresh``: the caller has just made the event (its id is new), so the look for an
    earlier copy is skipped — two statements instead of five, on every delta."""
    if not fresh:
        found = await conn.scalar(select(_e.seq).where(_e.event_id == event["event_id"]))
        if found is not None:
            return None
    now = datetime.now(UTC)
    # The row's time is the event's own: a frame read from the log and one handed over
    # live (agents/feed.py) are then the same, to the microsecond.
    at = datetime.fromisoformat(event["created_at"]) if "created_at" in event else now
    seq = await conn.scalar(
        update(agent_sessions)
        .where(_a.id == session_id)
        .values(last_seq=_a.last_seq + 1, updated_at=now)
        .returning(_a.last_seq)
    )
    if seq is None:
        raise not_found(session_id)
    row = session_events.insert().values(
        event_id=event["event_id"],
        session_id=session_id,
        seq=seq,
        kind=kind,
        type=type_of(kind, event),
        body=event,
        created_at=at,
    )
    if fresh:
        await conn.execute(row)
        return int(seq)
    try:
        async with conn.begin_nested():
            await conn.execute(row)
    except IntegrityError:  # written meanwhile by another consumer of the same event
        return None
    return int(seq)


async def lock(conn: AsyncConnection, session_id: str) -> None:
    """Take the session's row for the rest of the transaction (a write, so SQLite's lock
    too): a check made after it cannot race another writer of the session."""
    await conn.execute(
        update(agent_sessions).where(_a.id == session_id).values(updated_at=datetime.now(UTC))
    )


async def set_status(conn: AsyncConnection, session_id: str, status: str) -> None:
    await conn.execute(
        update(agent_sessions)
        .where(_a.id == session_id)
        .values(status=status, updated_at=datetime.now(UTC))
    )


async def events(
    conn: AsyncConnection, session_id: str, after: str | None, limit: int
) -> list[Any]:
    """Events after the one named ``after``, oldest first (what a client resuming
    reads); without ``after``, the newest ``limit``, newest first."""
    if after is None:
        query = select(session_events).where(_e.session_id == session_id)
        rows = await conn.execute(query.order_by(_e.seq.desc()).limit(limit))
        return list(rows.all())
    return await after_seq(conn, session_id, await seq_of(conn, session_id, after), limit)


async def seq_of(conn: AsyncConnection, session_id: str, event_id: str) -> int:
    """The seq of one of the session's events; a 404 for any other id (a stale or
    foreign anchor replays nothing: the client is told, and reconciles)."""
    found = await conn.scalar(
        select(_e.seq).where(_e.event_id == event_id, _e.session_id == session_id)
    )
    if found is None:
        raise NotFound(f"event {event_id!r} is not an event of session {session_id!r}")
    return int(found)


async def history(conn: AsyncConnection, session_id: str) -> list[Any]:
    """The session's events but the reply's deltas (each ``message`` holds its turn's
    whole text), oldest first: what the next model call is built from."""
    query = select(session_events).where(
        _e.session_id == session_id, ~and_(_e.kind == "assistant_event", _e.type == "delta")
    )
    return list((await conn.execute(query.order_by(_e.seq))).all())


async def after_seq(conn: AsyncConnection, session_id: str, seq: int, limit: int) -> list[Any]:
    """The session's events after ``seq``, oldest first."""
    query = select(session_events).where(_e.session_id == session_id, _e.seq > seq)
    return list((await conn.execute(query.order_by(_e.seq).limit(limit))).all())


async def result_of(conn: AsyncConnection, session_id: str, call_id: str) -> dict[str, Any] | None:
    """The logged result of a tool call (the first, were there two), or ``None``."""
    rows = await conn.execute(
        select(_e.body)
        .where(_e.session_id == session_id, _e.kind == "tool_result")
        .order_by(_e.seq)
    )
    for (body,) in rows:
        if body.get("call_id") == call_id:
            found: dict[str, Any] = body
            return found
    return None


async def answered_calls(conn: AsyncConnection, session_id: str) -> set[str]:
    """The ids of the session's tool calls that have a result."""
    rows = await conn.execute(
        select(_e.body).where(_e.session_id == session_id, _e.kind == "tool_result")
    )
    return {body["call_id"] for (body,) in rows}


async def append_result(conn: AsyncConnection, event: dict[str, Any]) -> int | None:
    """Log a tool call's result unless it has one (two executors, or an executor and a
    timeout, may answer one call): checked under the session's lock. Its seq, or
    ``None`` when the call had a result already."""
    await lock(conn, event["session_id"])
    if await result_of(conn, event["session_id"], event["call_id"]) is not None:
        return None
    return await append(conn, event["session_id"], "tool_result", event)


async def unanswered(conn: AsyncConnection, since: datetime, limit: int) -> list[dict[str, Any]]:
    """Client messages written since ``since`` whose turn has no end in the log, oldest
    first (what a memory bus forgot when its process died)."""
    ended = await conn.execute(
        select(_e.body).where(
            _e.kind == "assistant_event", _e.type == "done", _e.created_at >= since
        )
    )
    done = {body.get("turn_id") for (body,) in ended}
    asked = await conn.execute(
        select(_e.body)
        .where(_e.kind == "conversation_event", _e.type == "message", _e.created_at >= since)
        .order_by(_e.created_at, _e.seq)
        .limit(limit)
    )
    return [body for (body,) in asked if body["event_id"] not in done]
