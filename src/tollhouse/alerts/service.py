"""The alert writer: threshold crossings noticed on the request path, written off it.

``budget_reached`` (and ``notice``) are synchronous and cheap, called where a settle or
a refusal shows a budget reaching a threshold. A background task writes the events
(``events.record``: once per dedup key across every replica) with their outbox
deliveries. A process remembers the
keys it has written so that a flood of refusals does not become a flood of inserts.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlalchemy.ext.asyncio import AsyncEngine

from tollhouse.alerts.events import BudgetAlert, record
from tollhouse.background import BatchQueue
from tollhouse.money import from_nanos
from tollhouse.thresholds import crossed_marks, exhausted, projected_exhaustion

if TYPE_CHECKING:
    from tollhouse.admission.meter import Counter

log = logging.getLogger("tollhouse.alerts")

_SEEN_MAX = 10_000


class AlertService:
    """The admission engine's ``AlertSink``: passed to it at construction."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._queue: BatchQueue[BudgetAlert] = BatchQueue(
            self._write,
            name="tollhouse-alert-writer",
            what="alert events",
            batch=500,
            retry=(Exception,),  # the database is away: keep them and retry
            max_delay_s=5.0,
        )
        self._seen: set[str] = set()
        self.written = 0
        # Notified when new deliveries are waiting (the dispatcher's cue to look now).
        self.on_written: asyncio.Event = asyncio.Event()

    def budget_reached(
        self,
        ids: tuple[str | None, str | None, str | None],
        counter: Counter,
        before: int,
        after: int,
        refused: bool = False,
    ) -> None:
        """Notice every threshold of ``counter``'s budget that a settle from ``before``
        to ``after`` nano-dollars crossed, or that a refusal reached. ``ids`` are the
        request's key, team and customer ids (first, so that the engine binds them once
        per request with ``functools.partial``)."""
        spec = counter.scope.budget
        if spec is None or counter.start is None or counter.end is None:
            return
        if refused:
            reached = exhausted(spec.alert_thresholds)
        else:
            marks = spec.alert_marks
            # Most settles cross nothing: they stay below the first mark or past the last.
            if not marks or after < marks[0][1] or before >= marks[-1][1]:
                return
            reached = crossed_marks(marks, before, after)
        if not reached:
            return
        spend = from_nanos(after)
        now = datetime.now(UTC)
        projected = projected_exhaustion(spend, spec.max_limit, counter.start, counter.end, now)
        key_id, team_id, customer_id = ids
        for threshold in reached:
            self.notice(
                BudgetAlert(
                    budget_id=spec.id,
                    scope_kind=counter.scope.kind,
                    scope_id=counter.scope.id,
                    scope_name=counter.scope.name,
                    threshold=threshold,
                    spend=spend,
                    max_limit=spec.max_limit,
                    window_start=counter.start,
                    window_end=counter.end,
                    refused=refused,
                    projected=projected,
                    channel_ids=spec.alert_channels,
                    key_id=key_id,
                    team_id=team_id,
                    customer_id=customer_id,
                )
            )

    def notice(self, alert: BudgetAlert) -> None:
        key = alert.dedup_key
        if key in self._seen:
            return
        if len(self._seen) >= _SEEN_MAX:
            self._seen.clear()  # only an optimisation: the database deduplicates
        self._seen.add(key)
        self._queue.put(alert)

    @property
    def pending(self) -> int:
        return self._queue.pending

    async def start(self) -> None:
        await self._queue.start()

    async def stop(self, timeout_s: float = 5.0) -> None:
        await self._queue.stop(timeout_s)

    async def flush(self) -> None:
        await self._queue.flush()

    async def _write(self, batch: list[BudgetAlert]) -> None:
        now = datetime.now(UTC)
        async with self._engine.begin() as conn:
            for alert in batch:
                if await record(conn, alert, now) is not None:
                    self.written += 1
        self.on_written.set()
