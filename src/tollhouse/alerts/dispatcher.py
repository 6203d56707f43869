"""The dispatcher: sends what the outbox holds, retries, and logs every attempt.

A pass claims the deliveries that are due (an UPDATE that moves ``next_attempt_at`` a
lease ahead, conditional on the value it read: two replicas never claim the same one),
sends each in its own task with a timeout (a hanging channel holds one of
``_CONCURRENCY`` slots, nothing else), then records the attempt and either marks
the delivery sent, schedules the next attempt (exponential backoff with full jitter), or
gives up after ``alert_max_attempts`` — whatever the send raised, even for a stored row
no channel can render. It runs beside the gateway in embedded mode and
as ``tollhouse worker`` when scaled out; nothing here is on a request's path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from tollhouse.alerts import urls
from tollhouse.alerts.channels import Channel, Outcome, send
from tollhouse.alerts.models import (
    alert_attempts,
    alert_deliveries,
    alert_events,
    notification_channels,
)
from tollhouse.background import woken
from tollhouse.backoff import Backoff
from tollhouse.config import Settings
from tollhouse.crypto import SecretBox

log = logging.getLogger("tollhouse.alerts")

_BATCH = 50
_CONCURRENCY = 32  # sends in flight per process


class Dispatcher:
    def __init__(
        self,
        engine: AsyncEngine,
        settings: Settings,
        box: SecretBox | None,
        wake: asyncio.Event | None = None,
    ) -> None:
        self._engine = engine
        self._settings = settings
        self._box = box
        self._wake = wake or asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._inflight: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        if self._box is not None:
            try:  # URLs an older version stored in plaintext (alerts/urls.py)
                async with self._engine.begin() as conn:
                    sealed = await urls.seal_stored(conn, self._box)
                if sealed:
                    log.info("channel URLs encrypted at rest", extra={"channels": sealed})
            except Exception:  # the database is away: the next read or start does it
                log.exception("channel URLs not encrypted yet")
        self._session = aiohttp.ClientSession()
        self._task = asyncio.create_task(self._run(), name="tollhouse-alert-dispatcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for task in list(self._inflight):
            task.cancel()
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    async def _run(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception:  # the database is away: try again on the next pass
                log.exception("alert dispatch pass failed")
            self._wake.clear()
            await woken(self._wake, self._settings.alert_poll_interval_s)

    async def run_once(self) -> int:
        """Start sending the due deliveries there is room for; returns how many.

        Each send runs as its own task (its attempt is recorded when it ends), so a
        channel that hangs until its timeout holds one slot, not the whole dispatcher.
        """
        room = _CONCURRENCY - len(self._inflight)
        if room <= 0:
            return 0
        claimed = await self._claim(datetime.now(UTC), room)
        for row in claimed:
            task = asyncio.create_task(self._attempt(row))
            self._inflight.add(task)
            task.add_done_callback(self._finished)
        return len(claimed)

    async def drain(self) -> None:
        """Wait for every send in flight (tests)."""
        while self._inflight:
            await asyncio.gather(*list(self._inflight), return_exceptions=True)

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._wake.set()  # a slot is free: look for more

    async def _attempt(self, row: Any) -> None:
        started = time.monotonic()
        try:
            outcome = await self._send(row)
        except Exception as exc:
            # Whatever fails, the attempt is recorded and backs off (or gives up): a
            # crash here would leave the claim to expire and the delivery to be claimed
            # again forever, each time unrecorded.
            log.exception("alert send raised", extra={"delivery_id": row.id})
            outcome = Outcome(ok=False, error=f"{type(exc).__name__}: {exc}"[:500])
        took_ms = (time.monotonic() - started) * 1000
        try:
            await self._record([(row, outcome, took_ms)])
        except Exception:  # the claim's lease expires and the send is retried
            log.exception("alert attempt not recorded")

    async def _claim(self, now: datetime, room: int) -> list[Any]:
        d, e, c = alert_deliveries.c, alert_events.c, notification_channels.c
        query = (
            select(
                d.id,
                d.attempts,
                d.next_attempt_at,
                d.channel_id,
                e.payload,
                c.name,
                c.type,
                c.config,
                c.secret,
                c.url_secret,
            )  # fmt: skip
            .join(alert_events, e.id == d.event_id)
            .outerjoin(notification_channels, c.id == d.channel_id)
            .where(d.status == "pending", d.next_attempt_at <= now)
            .order_by(d.next_attempt_at)
            .limit(min(room, _BATCH))
        )
        lease = now + timedelta(seconds=self._settings.alert_send_timeout_s * 3 + 5)
        claimed = []
        async with self._engine.begin() as conn:
            for row in (await conn.execute(query)).all():
                moved = await conn.execute(
                    update(alert_deliveries)
                    .where(d.id == row.id, d.next_attempt_at == row.next_attempt_at)
                    .values(next_attempt_at=lease)
                )
                if moved.rowcount == 1:
                    claimed.append(row)
        return claimed

    async def _send(self, row: Any) -> Outcome:
        if row.type is None:
            return Outcome(ok=False, error="channel deleted")
        secret = None
        if row.secret is not None:
            if self._box is None:
                return Outcome(ok=False, error="TOLLHOUSE_SECRET_KEY is not set: secret unreadable")
            try:
                secret = self._box.decrypt(row.secret)
            except Exception as exc:
                return Outcome(ok=False, error=str(exc))
        config = urls.reveal(row.type, dict(row.config or {}), row.url_secret, self._box)
        channel = Channel(row.channel_id, row.name, row.type, config, secret)
        assert self._session is not None
        return await send(
            channel, dict(row.payload), self._session, self._settings.alert_send_timeout_s
        )

    async def _record(self, results: list[tuple[Any, Outcome, float]]) -> None:
        now = datetime.now(UTC)
        settings = self._settings
        async with self._engine.begin() as conn:
            for row, outcome, took_ms in results:
                number = row.attempts + 1
                await conn.execute(
                    insert(alert_attempts).values(
                        delivery_id=row.id,
                        attempt=number,
                        at=now,
                        ok=outcome.ok,
                        status_code=outcome.status_code,
                        error=outcome.error or ("preview logged" if outcome.preview else None),
                        duration_ms=round(took_ms, 3),
                    )
                )
                values: dict[str, Any] = {"attempts": number, "last_error": outcome.error}
                if outcome.ok:
                    values.update(status="sent", sent_at=now)
                elif number >= settings.alert_max_attempts:
                    values["status"] = "failed"
                    log.error(
                        "alert delivery failed for good",
                        extra={"delivery_id": row.id, "attempts": number, "error": outcome.error},
                    )
                else:
                    values["next_attempt_at"] = now + timedelta(seconds=self._backoff(number))
                await conn.execute(
                    update(alert_deliveries).where(alert_deliveries.c.id == row.id).values(**values)
                )

    def _backoff(self, attempt: int) -> float:
        """Full jitter: uniform in [0, min(max, base × 2^(attempt-1))]."""
        settings = self._settings
        backoff = Backoff(settings.alert_retry_base_s, settings.alert_retry_max_s, jitter=True)
        return backoff.delay(attempt - 1)
