"""The outbox of a session's client events: a message or a cancel is never lost between
the session's log and ``conversation.inbound`` (docs/agents.md, *The outbox*).

A request writes its event to the log in its transaction (``published_at`` NULL) and,
after the commit, publishes it; once the bus has it, one UPDATE sets ``published_at``.
A publication that fails — the bus is away, the process dies between the commit and the
publish — leaves the event waiting in the log, and ``Redrive``, on every server, publishes
the events that have waited longer than its grace.

**Order.** A session's events go onto the bus in seq order. A request publishes the
events of its session still waiting before its own (a message sent after a failed one
carries it along), a publication stops at its first failure so nothing overtakes what
failed, and the redrive takes a session's waiting events from the oldest on, stopping at
the first one younger than its grace.

**Duplicates** are harmless (every consumer is idempotent on ``event_id``) but avoided:
the redrive leaves alone what a request may still be publishing (the grace is two
intervals), and on Postgres it locks the sessions it works on (their ``agent_sessions``
rows, ``FOR UPDATE SKIP LOCKED``, for one short transaction), so two servers never
publish one session's events side by side. SQLite has no row locks; it serves one
server as a rule, and two passes that meet there publish an event twice at worst.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from itertools import takewhile
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tollhouse.agents import rawlog
from tollhouse.agents.models import UNPUBLISHED, agent_sessions, session_events
from tollhouse.background import finished, woken
from tollhouse.bus import events
from tollhouse.bus.backends import EventBus
from tollhouse.bus.events import INBOUND
from tollhouse.db.writes import writing

log = logging.getLogger("tollhouse.agents")

BATCH = 100  # events published per pass, and per request at most
# A bus that hangs (rather than refuses) must not hold a request, or the redrive's
# session locks, for long: the event waits in the log either way.
_PUBLISH_TIMEOUT_S = 5.0

_e = session_events.c
_a = agent_sessions.c
# The partial index's own condition, as literal SQL: a planner uses a partial index only
# for a query whose WHERE implies its predicate, which a bound parameter does not.
_WAITING = text(UNPUBLISHED)


async def waiting(
    conn: AsyncConnection, session_id: str, *, through: int | None = None, limit: int = BATCH
) -> list[Any]:
    """The session's client events not yet published, by seq (up to seq ``through``)."""
    query = select(_e.event_id, _e.seq, _e.body, _e.created_at).where(
        _WAITING, _e.session_id == session_id
    )
    if through is not None:
        query = query.where(_e.seq <= through)
    return list((await conn.execute(query.order_by(_e.seq).limit(limit))).all())


async def send(bus: EventBus, rows: Sequence[Any]) -> list[str]:
    """Publish ``rows`` (one session's, by seq) in order; the ids of those settled. Stops
    at the first failure, which it logs: what follows must not overtake it."""
    settled: list[str] = []
    for row in rows:
        try:
            async with asyncio.timeout(_PUBLISH_TIMEOUT_S):
                await bus.publish(INBOUND, {**row.body, "seq": row.seq})
        except events.InvalidEvent as exc:
            # It can never be published (a schema this version refuses): settled, so it
            # does not hold its session's later events back for ever.
            log.error(
                "session event refused by its schema; not published",
                extra={"event_id": row.event_id, "error": exc.message},
            )
        except Exception as exc:
            log.warning(
                "session event not published; the outbox redrive will publish it",
                extra={"event_id": row.event_id, "error": repr(exc)},
            )
            break
        settled.append(row.event_id)
    return settled


async def mark(conn: AsyncConnection, event_ids: Sequence[str]) -> None:
    if event_ids:
        await conn.execute(
            update(session_events)
            .where(_e.event_id.in_(event_ids), _e.published_at.is_(None))
            .values(published_at=datetime.now(UTC))
        )


async def deliver(engine: AsyncEngine, bus: EventBus, rows: Sequence[Any]) -> None:
    """For a request, after its commit: publish ``rows`` and mark what went. Nothing is
    raised — the events are in the log, and the redrive publishes what this did not."""
    settled = await send(bus, rows)
    if not settled:
        return
    try:
        await rawlog.mark(engine, settled)
    except Exception as exc:  # published all the same; the redrive sends them again
        log.warning(
            "session events published but not marked as such",
            extra={"event_ids": settled, "error": repr(exc)},
        )


class Redrive:
    """Every server's loop: every ``interval_s``, publishes the client events that have
    waited in the log longer than two intervals (at most ``batch`` a pass)."""

    def __init__(
        self, engine: AsyncEngine, bus: EventBus, interval_s: float, *, batch: int = BATCH
    ) -> None:
        self._engine = engine
        self._bus = bus
        self._interval_s = interval_s
        self._grace = timedelta(seconds=2 * interval_s)
        self._batch = batch
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="tollhouse-session-outbox")

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Let a pass under way finish (a statement cut off on aiosqlite ends in its
        thread after the loop is gone), then stop; cancelled past ``timeout_s``."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        self._wake.set()
        await finished(task, timeout_s)

    async def run_once(self, now: datetime | None = None) -> int:
        """One pass at ``now``; how many events it settled."""
        cutoff = (now or datetime.now(UTC)) - self._grace
        settled: list[str] = []
        async with writing(self._engine) as conn:
            due = list(
                await conn.scalars(
                    select(_e.session_id)
                    .where(_WAITING, _e.created_at < cutoff)
                    .group_by(_e.session_id)
                    .order_by(func.min(_e.created_at))
                    .limit(self._batch)
                )
            )
            if not due:
                return 0
            # Sessions another server works on now are skipped; it publishes them.
            mine = set(
                await conn.scalars(
                    select(_a.id).where(_a.id.in_(due)).with_for_update(skip_locked=True)
                )
            )
            for session_id in (s for s in due if s in mine):
                rows = await waiting(conn, session_id, limit=self._batch - len(settled))
                # From the oldest on: one younger than the grace may still be on its way.
                old = list(takewhile(lambda row: row.created_at < cutoff, rows))
                sent = await send(self._bus, old)
                settled += sent
                if len(sent) < len(old) or len(settled) >= self._batch:
                    break  # the bus is away (the next pass tries again), or enough
            await mark(conn, settled)
        if settled:
            log.info("session events redriven", extra={"count": len(settled)})
        return len(settled)

    async def _run(self) -> None:
        while not self._stopping:
            await woken(self._wake, self._interval_s)
            if self._stopping:
                return
            try:
                await self.run_once()
            except Exception:  # the database is away: the next pass tries again
                log.exception("session outbox pass failed")
