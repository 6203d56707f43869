"""Leasing from the pool: the one statement that hands a sandbox to a track, and the
lifecycle writes around it (docs/sandboxes.md, *How a lease is made*).

A lease is one ``UPDATE … WHERE id = (SELECT id … WHERE status = 'available' ORDER BY
created_at LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING *``. On Postgres, concurrent
callers each lock a *different* available row (``SKIP LOCKED``), so none waits for
another and none is told "exhausted" while rows remain; on SQLite, the single writer
runs the same statement one at a time. "One sandbox per track" is the partial unique
index on ``track_id`` over ``allocated`` rows: a second lease for a track fails to
commit, and the caller is answered with the lease that won. No read decides anything.

Functions take a connection and run in the caller's transaction, except ``allocate``,
which owns its transactions (a refused insert aborts one, and the answer is read in the
next), and ``read`` and ``end_lease``, the track's own calls, which take the engine: on
Postgres each is one statement sent on the driver, as the lease is.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tollhouse.crypto import SecretBox
from tollhouse.errors import Conflict, NotFound, NotOwner, PoolExhausted
from tollhouse.ledger.service import decode_cursor, encode_cursor
from tollhouse.sandboxes.models import sandboxes

_s = sandboxes.c
# A second lease refused to a track by the unique index, as SQLAlchemy or asyncpg says it.
_UNIQUE: tuple[type[BaseException], ...] = (IntegrityError,)
try:
    from asyncpg.exceptions import (  # type: ignore[import-untyped]  # the postgres extra
        UniqueViolationError,
    )

    _UNIQUE += (UniqueViolationError,)
except ImportError:  # pragma: no cover - without asyncpg there is no Postgres engine
    pass
_LEASE_COLUMNS = ("track_id", "purpose", "token_id", "idempotency_key", "allocated_at")


def new_sandbox_id() -> str:
    return f"sbx_{uuid.uuid4().hex}"


@dataclass(frozen=True, slots=True)
class Ask:
    """What a track asks for."""

    track_id: str
    duration: timedelta  # the lab's length; the lease adds the grace period
    purpose: str = "lab"
    token_id: str | None = None
    idempotency_key: str | None = None
    backend: str | None = None  # None: any


@dataclass(frozen=True, slots=True)
class Leased:
    row: Any
    created: bool  # a new lease (201), or the track's own (200)


async def allocate(
    engine: AsyncEngine, ask: Ask, grace: timedelta, now: datetime, retry_after_s: int
) -> Leased:
    """The track's live lease, or a new one; ``PoolExhausted`` when none is free.

    One connection and, on Postgres, one statement (``_HELD_OR_LEASED_PG``); on SQLite the
    read and the lease in one transaction. The unique index refusing a second lease to a
    track (two of its asks racing) is answered with the lease that won."""
    expires_at = ask_expiry(now, ask.duration, grace)
    # On Postgres the one statement is atomic on its own: no BEGIN and COMMIT around it,
    # one round trip instead of three (asyncpg keeps autocommit on the client side).
    single = engine.dialect.name == "postgresql"
    for _ in range(3):  # a lease released between the refusal and the read: ask again
        try:
            async with engine.connect() as conn:
                if single:
                    found = await _held_or_leased_pg(conn, ask, expires_at, now)
                else:
                    async with conn.begin():
                        found = await _held_or_leased(conn, ask, expires_at, now)
        except _UNIQUE:  # the track won a lease in another request meanwhile
            async with engine.connect() as conn:
                found = await _held(conn, ask)
            if found is None:
                continue
        if found is None:
            raise PoolExhausted(
                "no sandbox is available: the pool is exhausted; retry later",
                headers={"retry-after": str(retry_after_s)},
            )
        return found
    raise PoolExhausted(
        "the pool is changing too fast to lease from; retry",
        headers={"retry-after": str(retry_after_s)},
    )


async def _held_or_leased(
    conn: AsyncConnection, ask: Ask, expires_at: datetime, now: datetime
) -> Leased | None:
    """SQLite: the read, then the lease, in the caller's transaction."""
    held = await _held(conn, ask)
    if held is not None:
        return held
    row = await lease_one(conn, ask, expires_at, now)
    return Leased(row, True) if row is not None else None


async def _held_or_leased_pg(
    conn: AsyncConnection, ask: Ask, expires_at: datetime, now: datetime
) -> Leased | None:
    """Postgres: ``_HELD_OR_LEASED_PG``, one statement, atomic on its own (no BEGIN and
    COMMIT around it), sent on the pooled connection's asyncpg connection. The broker's
    whole throughput is this call; through SQLAlchemy's statement machinery it cost
    about 450 µs of Python a call, several times what asyncpg takes for it."""
    records = await (await _driver(conn)).fetch(
        _HELD_OR_LEASED_PG,
        ask.track_id,
        ask.purpose,
        ask.token_id,
        ask.idempotency_key,
        ask.backend,
        now,
        expires_at,
    )
    rows = [Record(dict(record)) for record in records]
    _no_stolen_key(rows, ask)
    for row in rows:
        if not row.created:
            return Leased(row, False)
    return Leased(rows[0], True) if rows else None


async def _driver(conn: AsyncConnection) -> Any:
    """The pooled connection's asyncpg connection: a statement sent on it outside a
    transaction SQLAlchemy began runs on its own (asyncpg keeps autocommit)."""
    return (await conn.get_raw_connection()).driver_connection


class Record:
    """A row asyncpg returned, read as SQLAlchemy's rows are: by attribute, and as
    ``_mapping``."""

    __slots__ = ("_mapping",)

    def __init__(self, mapping: dict[str, Any]) -> None:
        self._mapping = mapping

    def __getattr__(self, name: str) -> Any:
        try:
            return self._mapping[name]
        except KeyError:
            raise AttributeError(name) from None


# The track's live lease if it has one, else a free sandbox leased to it: one round trip.
# ``held`` and ``picked`` see the statement's snapshot; a lease of the same track that
# commits meanwhile makes this one fail the unique index (``allocate`` reads the winner).
# Parameters (asyncpg's): track, purpose, token, key, backend, now, expires.
#
# asyncpg prepares the statement once per connection, and after five runs Postgres plans
# it once for any parameters (a generic plan). ``held`` is therefore two lookups, each
# with an index whatever the parameters: the track's lease (``ux_sandboxes_live_track``)
# and, for a key, another track's lease holding it (``ix_sandboxes_live_key``; a NULL key
# finds nothing). Written as one ``track_id = $1 OR (key given AND idempotency_key =
# $4)``, the generic plan read every live lease on every call: allocation slowed down as
# the pool filled (docs/benchmarks.md, *Sandboxes*).
_HELD_OR_LEASED_PG = """
WITH held AS (
    SELECT * FROM sandboxes
    WHERE status = 'allocated' AND track_id = $1
    UNION ALL
    SELECT * FROM sandboxes
    WHERE status = 'allocated' AND idempotency_key = $4 AND track_id <> $1
), picked AS (
    SELECT id FROM sandboxes
    WHERE status = 'available'
      AND (CAST($5 AS VARCHAR) IS NULL OR backend = $5)
      AND NOT EXISTS (SELECT 1 FROM held)
    ORDER BY created_at, id
    LIMIT 1
    FOR UPDATE SKIP LOCKED
), leased AS (
    UPDATE sandboxes AS s
    SET status = 'allocated', track_id = $1, purpose = $2, token_id = $3,
        idempotency_key = $4, allocated_at = $6, expires_at = $7, updated_at = $6
    FROM picked
    WHERE s.id = picked.id AND s.status = 'available'
    RETURNING s.*
)
SELECT false AS created, held.* FROM held
UNION ALL
SELECT true AS created, leased.* FROM leased
"""


def ask_expiry(now: datetime, duration: timedelta, grace: timedelta) -> datetime:
    return now + duration + grace


async def lease_one(conn: AsyncConnection, ask: Ask, expires_at: datetime, now: datetime) -> Any:
    """The statement (see the module); the leased row, or ``None`` when none is free."""
    free = _s.status == "available"
    if ask.backend is not None:
        free = and_(free, _s.backend == ask.backend)
    pick = (
        select(_s.id)
        .where(free)
        .order_by(_s.created_at, _s.id)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    statement = (
        update(sandboxes)
        .where(_s.id == pick, _s.status == "available")
        .values(
            status="allocated",
            track_id=ask.track_id,
            purpose=ask.purpose,
            token_id=ask.token_id,
            idempotency_key=ask.idempotency_key,
            allocated_at=now,
            expires_at=expires_at,
            updated_at=now,
        )
        .returning(*sandboxes.c)
    )
    return (await conn.execute(statement)).one_or_none()


async def _held(conn: AsyncConnection, ask: Ask) -> Leased | None:
    """The track's live lease; a 409 when its idempotency key is another track's."""
    live = _s.status == "allocated"
    mine = _s.track_id == ask.track_id
    if ask.idempotency_key is not None:
        mine = or_(mine, _s.idempotency_key == ask.idempotency_key)
    rows = (await conn.execute(select(sandboxes).where(live, mine))).all()
    _no_stolen_key(rows, ask)
    return Leased(rows[0], False) if rows else None


def _no_stolen_key(rows: Sequence[Any], ask: Ask) -> None:
    for row in rows:
        if row.track_id != ask.track_id and not getattr(row, "created", False):
            raise Conflict(
                "Idempotency-Key is already used by another track's lease: use a new key",
                param="Idempotency-Key",
            )


async def get(conn: AsyncConnection, sandbox_id: str) -> Any:
    row = (await conn.execute(select(sandboxes).where(_s.id == sandbox_id))).one_or_none()
    if row is None:
        raise NotFound(f"sandbox {sandbox_id!r} not found")
    return row


async def read(engine: AsyncEngine, sandbox_id: str) -> Any:
    """One sandbox (``NotFound``) on a connection of its own: on Postgres one statement
    on the driver, outside a transaction (no BEGIN and ROLLBACK around it)."""
    async with engine.connect() as conn:
        if engine.dialect.name != "postgresql":
            return await get(conn, sandbox_id)
        record = await (await _driver(conn)).fetchrow(_ONE_PG, sandbox_id)
    if record is None:
        raise NotFound(f"sandbox {sandbox_id!r} not found")
    return Record(dict(record))


async def end_lease(engine: AsyncEngine, sandbox_id: str, track_id: str, now: datetime) -> Any:
    """``mark_for_deletion`` by the track holding the sandbox, in a transaction of its own:
    on Postgres one statement (``_MARK_PG``) instead of five round trips, with the same
    answers (``NotFound``; ``NotOwner``; a lease marked again answers the same)."""
    if engine.dialect.name != "postgresql":
        async with engine.begin() as conn:
            return await mark_for_deletion(conn, sandbox_id, track_id, now)
    async with engine.connect() as conn:
        records = await (await _driver(conn)).fetch(_MARK_PG, sandbox_id, track_id, now)
    if not records:
        raise NotFound(f"sandbox {sandbox_id!r} not found")
    mapping = dict(records[0])
    marked = mapping.pop("marked")
    row = Record(mapping)
    if marked:
        return row
    if row.track_id != track_id or row.status not in ("allocated", "pending_deletion"):
        raise NotOwner(f"sandbox {sandbox_id!r} is not leased to track {track_id!r}")
    if row.status == "pending_deletion":
        return row  # asked again: the same answer
    # Still leased to the track in the statement's snapshot, yet not marked: its row
    # changed meanwhile (marked by another ask, expired). As ``mark_for_deletion``
    # answers after an update that found nothing: the sandbox as it is now.
    return await read(engine, sandbox_id)


# Parameters: the sandbox's id.
_ONE_PG = "SELECT * FROM sandboxes WHERE id = $1"

# The track's live lease marked for deletion, or else the sandbox as it was (``marked``
# false), for ``end_lease`` to answer from. Parameters: sandbox, track, now.
_MARK_PG = """
WITH marked AS (
    UPDATE sandboxes SET status = 'pending_deletion', updated_at = $3
    WHERE id = $1 AND track_id = $2 AND status = 'allocated'
    RETURNING *
)
SELECT true AS marked, marked.* FROM marked
UNION ALL
SELECT false AS marked, sandboxes.* FROM sandboxes
WHERE id = $1 AND NOT EXISTS (SELECT 1 FROM marked)
"""


async def mark_for_deletion(
    conn: AsyncConnection, sandbox_id: str, track_id: str | None, now: datetime
) -> Any:
    """The lease ends: the sandbox waits for the reaper to delete or recycle it.
    ``track_id``: only the track holding it may (``None``: the operator may, any time)."""
    row = await get(conn, sandbox_id)
    if track_id is not None and (
        row.track_id != track_id or row.status not in ("allocated", "pending_deletion")
    ):
        raise NotOwner(f"sandbox {sandbox_id!r} is not leased to track {track_id!r}")
    if row.status in ("pending_deletion", "deleting"):
        return row  # asked again: the same answer
    await conn.execute(
        update(sandboxes)
        .where(_s.id == sandbox_id, _s.status == row.status)
        .values(status="pending_deletion", updated_at=now)
    )
    return await get(conn, sandbox_id)


async def expire_due(conn: AsyncConnection, now: datetime) -> int:
    """Leases past their ``expires_at`` end (auto-expire)."""
    result = await conn.execute(
        update(sandboxes)
        .where(_s.status == "allocated", _s.expires_at <= now)
        .values(status="pending_deletion", updated_at=now)
    )
    return int(result.rowcount or 0)


async def claim_for_deletion(
    conn: AsyncConnection, now: datetime, limit: int, stuck_after: timedelta
) -> list[Any]:
    """Up to ``limit`` sandboxes to delete, claimed (``deleting``) so that no other
    replica's reaper deletes them too; a claim older than ``stuck_after`` (its reaper
    died) is taken over."""
    waiting = or_(
        _s.status == "pending_deletion",
        and_(_s.status == "deleting", _s.updated_at <= now - stuck_after),
    )
    pick = (
        select(_s.id)
        .where(waiting)
        .order_by(_s.updated_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    ids = list((await conn.execute(pick)).scalars())
    if not ids:
        return []
    await conn.execute(
        update(sandboxes).where(_s.id.in_(ids)).values(status="deleting", updated_at=now)
    )
    return list((await conn.execute(select(sandboxes).where(_s.id.in_(ids)))).all())


async def recycled(conn: AsyncConnection, sandbox_id: str, now: datetime) -> None:
    """Back in the pool, its lease forgotten (a static sandbox its operator resets)."""
    cleared: dict[str, Any] = {name: None for name in _LEASE_COLUMNS}
    await conn.execute(
        update(sandboxes)
        .where(_s.id == sandbox_id)
        .values(status="available", expires_at=None, error=None, updated_at=now, **cleared)
    )


async def failed(conn: AsyncConnection, sandbox_id: str, error: str, now: datetime) -> None:
    await conn.execute(
        update(sandboxes)
        .where(_s.id == sandbox_id)
        .values(status="failed", error=error[:2000], updated_at=now)
    )


async def remove(conn: AsyncConnection, sandbox_id: str) -> None:
    """Deleted by its backend: the row goes too (the pool no longer has it)."""
    await conn.execute(sandboxes.delete().where(_s.id == sandbox_id))


async def page(
    conn: AsyncConnection,
    *,
    status: str | None,
    backend: str | None,
    track_id: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[Any], str | None]:
    """Sandboxes oldest first, ``limit`` at a time, and the next page's cursor."""
    query = select(sandboxes)
    if status is not None:
        query = query.where(_s.status == status)
    if backend is not None:
        query = query.where(_s.backend == backend)
    if track_id is not None:
        query = query.where(_s.track_id == track_id)
    if cursor is not None:  # the same opaque cursor as every listing (time and id)
        created_at, last_id = decode_cursor(cursor)
        query = query.where(
            or_(_s.created_at > created_at, and_(_s.created_at == created_at, _s.id > last_id))
        )
    rows = list((await conn.execute(query.order_by(_s.created_at, _s.id).limit(limit + 1))).all())
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, encode_cursor(rows[-1].created_at, rows[-1].id) if more and rows else None


async def rotate_secrets(conn: AsyncConnection, box: SecretBox) -> int:
    """Static sandboxes' credentials re-encrypted with the newest key (``tollhouse secrets
    rotate``); how many."""
    rows = (await conn.execute(select(_s.id, _s.secret).where(_s.secret.is_not(None)))).all()
    for row in rows:
        await conn.execute(
            update(sandboxes).where(_s.id == row.id).values(secret=box.rotate(row.secret))
        )
    return len(rows)
