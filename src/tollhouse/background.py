"""A queue drained in batches by one background task, for work that leaves the request
path: ``put`` is O(1) and never blocks; ``deliver`` gets the oldest items in batches;
a batch that fails with one of the ``retry`` errors stays queued and is tried again with
exponential backoff (``backoff.Backoff``: 0.05 s doubling to ``max_delay_s``). ``stop``
delivers what is left, bounded in time.

Used for alert events (``alerts/service.py``) and Redis settles (``admission/functions.py``).

Every bounded wait in Tollhouse goes through ``asyncio.timeout`` (``woken`` below), never
``asyncio.wait_for``: on Python 3.11, ``wait_for`` drops a cancellation that arrives in
the same loop turn as the awaited result, and a background loop cancelled at shutdown
then runs forever (seen as a hung lifespan shutdown). Ruff bans ``wait_for``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from tollhouse.backoff import Backoff

log = logging.getLogger("tollhouse")

T = TypeVar("T")

_FIRST_DELAY_S = 0.05


async def woken(event: asyncio.Event, timeout_s: float) -> bool:
    """Wait for ``event`` for at most ``timeout_s``; True when it was set."""
    try:
        async with asyncio.timeout(timeout_s):
            await event.wait()
    except TimeoutError:
        return False
    return True


async def finished(task: asyncio.Task[None], timeout_s: float) -> bool:
    """Let ``task`` end on its own for at most ``timeout_s`` (a pass under way is not cut
    in half: an aiosqlite statement cut off ends in its thread after the loop is gone),
    then cancel it; True when it ended on its own."""
    try:
        async with asyncio.timeout(timeout_s):
            await asyncio.shield(task)
    except TimeoutError:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return False
    return True


class BatchQueue(Generic[T]):
    def __init__(
        self,
        deliver: Callable[[list[T]], Awaitable[None]],
        *,
        name: str,
        what: str,
        batch: int,
        retry: tuple[type[BaseException], ...],
        max_delay_s: float,
    ) -> None:
        self._deliver = deliver
        self._name, self._what, self._batch = name, what, batch
        self._retry, self._backoff = retry, Backoff(_FIRST_DELAY_S, max_delay_s)
        self._items: deque[T] = deque()
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def pending(self) -> int:
        return len(self._items)

    def put(self, item: T) -> None:
        self._items.append(item)
        self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self._name)

    async def stop(self, timeout_s: float) -> None:
        """Deliver what is queued (bounded by ``timeout_s``), then end the task."""
        self._stopping = True
        self._wake.set()
        if self._task is None:
            return
        if not await finished(self._task, timeout_s):
            log.error(f"{self._what} not delivered at shutdown", extra={"count": self.pending})

    async def flush(self) -> None:
        """Deliver everything queued now; raises what ``deliver`` raises."""
        while self._items:
            await self._deliver_next()

    async def _deliver_next(self) -> None:
        # One delivery at a time: ``flush`` may run beside the background task.
        async with self._lock:
            batch = [self._items[i] for i in range(min(self._batch, len(self._items)))]
            if batch:
                await self._deliver(batch)
                for _ in batch:
                    self._items.popleft()

    async def _run(self) -> None:
        failures = 0  # in a row
        while True:
            if not self._items:
                if self._stopping:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                await self._deliver_next()
            except self._retry as exc:
                delay = self._backoff.delay(failures)
                if self._stopping and delay >= 1:
                    log.error(f"{self._what} not delivered at shutdown", extra={"error": repr(exc)})
                    return
                log.warning(f"{self._what} not delivered; retrying", extra={"error": repr(exc)})
                await asyncio.sleep(delay)
                failures += 1
                continue
            failures = 0
