"""The credits sweeper: books grants that take effect and lots that expire, on time.

Runs in every server process (``credits_sweep_interval_s``); replicas may run it side by
side because each booking is keyed (``fund:<lot>``, ``expire:<lot>``) and the account
row is locked while its lots are drawn. After a booking, this process's admission
engine reloads at once (others see the version move within a poll interval).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from tollhouse.credits.service import run_due

log = logging.getLogger("tollhouse.credits")


class CreditSweeper:
    def __init__(
        self,
        engine: AsyncEngine,
        interval_s: float,
        on_change: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._engine = engine
        self._interval_s = interval_s
        self._on_change = on_change
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="tollhouse-credit-sweeper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def sweep(self, now: datetime | None = None) -> tuple[int, int]:
        """Book what is due at ``now``; returns (grants started, lots expired)."""
        async with self._engine.begin() as conn:
            started, expired = await run_due(conn, now or datetime.now(UTC))
        if (started or expired) and self._on_change is not None:
            await self._on_change()
        if started or expired:
            log.info("credit lots booked", extra={"started": started, "expired": expired})
        return started, expired

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self.sweep()
            except Exception:  # a failed sweep must not end the loop; the next retries
                log.exception("credit sweep failed")
