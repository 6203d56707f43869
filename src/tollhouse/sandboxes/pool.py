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
next).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tollhouse.crypto import SecretBox
from tollhouse.errors import Conflict, NotFound, NotOwner, PoolExhausted, ValidationFailed
from tollhouse.sandboxes.models import sandboxes

_s = sandboxes.c
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
    """The track's live lease, or a new one; ``PoolExhausted`` when none is free."""
    async with engine.connect() as conn:
        held = await _held(conn, ask)
    if held is not None:
        return held
    for _ in range(3):  # a lease released between the refusal and the read: ask again
        try:
            async with engine.begin() as conn:
                row = await lease_one(conn, ask, ask_expiry(now, ask.duration, grace), now)
        except IntegrityError:  # the track won a lease in another request meanwhile
            row = None
            async with engine.connect() as conn:
                held = await _held(conn, ask)
            if held is not None:
                return held
            continue
        if row is not None:
            return Leased(row, True)
        async with engine.connect() as conn:  # none free: unless the track got one
            held = await _held(conn, ask)
        if held is not None:
            return held
        raise PoolExhausted(
            "no sandbox is available: the pool is exhausted; retry later",
            headers={"retry-after": str(retry_after_s)},
        )
    raise PoolExhausted(
        "the pool is changing too fast to lease from; retry",
        headers={"retry-after": str(retry_after_s)},
    )


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
    for row in rows:
        if row.track_id != ask.track_id:
            raise Conflict(
                "Idempotency-Key is already used by another track's lease: use a new key",
                param="Idempotency-Key",
            )
    return Leased(rows[0], False) if rows else None


async def get(conn: AsyncConnection, sandbox_id: str) -> Any:
    row = (await conn.execute(select(sandboxes).where(_s.id == sandbox_id))).one_or_none()
    if row is None:
        raise NotFound(f"sandbox {sandbox_id!r} not found")
    return row


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
    """Sandboxes oldest first, ``limit`` at a time; the cursor is the last one's id."""
    query = select(sandboxes)
    if status is not None:
        query = query.where(_s.status == status)
    if backend is not None:
        query = query.where(_s.backend == backend)
    if track_id is not None:
        query = query.where(_s.track_id == track_id)
    if cursor is not None:
        after = (await conn.execute(select(sandboxes).where(_s.id == cursor))).one_or_none()
        if after is None:  # never a 404: the listing exists, the cursor does not
            raise ValidationFailed(
                "cursor: not a next_cursor of this listing (or its sandbox is gone)",
                param="cursor",
            )
        query = query.where(
            or_(
                _s.created_at > after.created_at,
                and_(_s.created_at == after.created_at, _s.id > after.id),
            )
        )
    rows = list((await conn.execute(query.order_by(_s.created_at, _s.id).limit(limit + 1))).all())
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, rows[-1].id if more and rows else None


async def rotate_secrets(conn: AsyncConnection, box: SecretBox) -> int:
    """Static sandboxes' credentials re-encrypted with the newest key (``tollhouse secrets
    rotate``); how many."""
    rows = (await conn.execute(select(_s.id, _s.secret).where(_s.secret.is_not(None)))).all()
    for row in rows:
        await conn.execute(
            update(sandboxes).where(_s.id == row.id).values(secret=box.rotate(row.secret))
        )
    return len(rows)
