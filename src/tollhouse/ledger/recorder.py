"""Batched, off-hot-path writes of usage records.

``add`` is synchronous and O(1): the request path appends to a buffer and moves on. One
background task writes the buffer in batches (``ledger_batch_size`` rows per round trip,
at most ``ledger_flush_interval_ms`` after a record arrives). A batch the database does
not take goes to the spool on local disk (``spool.py``) and is replayed, in order and
exactly once, when the database is back; without a spool (tests of the bare recorder) it
stays buffered and is retried. ``stop`` writes or spools everything still buffered,
which is what makes SIGTERM lossless.

Each batch's transaction adds the records it inserted to the hourly and daily roll-ups
(``rollups.py``), so they commit together or not at all.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tollhouse.background import woken
from tollhouse.backoff import Backoff
from tollhouse.db import insert_ignoring
from tollhouse.errors import StoreUnavailable
from tollhouse.ledger.models import usage_records
from tollhouse.ledger.rollups import roll_up
from tollhouse.ledger.schemas import UsageRecord
from tollhouse.ledger.spool import Spool
from tollhouse.ops.metrics import Metrics

log = logging.getLogger("tollhouse.ledger")


class Companion(Protocol):
    """Writes in the transaction of each batch, with its records (the credit journal's
    posts): what depends on usage records commits with them or not at all."""

    def prepare(self, rows: list[dict[str, Any]]) -> bool:
        """Before the insert: fill in the rows' own columns; ``True`` to ``book``."""

    async def book(
        self, conn: AsyncConnection, rows: list[dict[str, Any]], written: set[str]
    ) -> None:
        """After the insert, in its transaction; ``written``: the ids it inserted (a
        record written before is skipped)."""


# Told of each batch once it has committed (the credits balance watch): synchronous and
# cheap; whatever it raises is logged and changes nothing here.
Written = Callable[[list[dict[str, Any]]], None]

_RETRY = Backoff(0.05, 2.0)  # after a failed write: 0.05 s doubling to 2 s


class UsageRecorder:
    def __init__(
        self,
        engine: AsyncEngine,
        metrics: Metrics,
        *,
        batch_size: int = 500,
        flush_interval_ms: int = 100,
        spool: Spool | None = None,
        companion: Companion | None = None,
        on_written: Written | None = None,
    ) -> None:
        self._engine = engine
        self._companion = companion
        self._on_written = on_written
        self.spool = spool
        self._metrics = metrics
        self._batch_size = batch_size
        self._interval = flush_interval_ms / 1000
        self._buffer: deque[UsageRecord] = deque()
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self._deadline: float | None = None
        self.written = 0
        self.spooled = 0
        self.database_ok = True
        # durability: strict — requests waiting for their record to be safe, by id.
        self._waiters: dict[str, asyncio.Future[None]] = {}

    @property
    def pending(self) -> int:
        return len(self._buffer)

    def add(self, record: UsageRecord) -> None:
        """Queue one record; never blocks and never raises."""
        self._buffer.append(record)
        if len(self._buffer) >= self._batch_size:
            self._wake.set()

    def add_durable(self, record: UsageRecord) -> asyncio.Future[None]:
        """Queue one record; the future resolves once it is in the ledger or spooled to
        disk (``durability: strict``). Written at once, batched with its neighbours."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters[record.id] = future
        self._buffer.append(record)
        self._wake.set()
        return future

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="tollhouse-usage-recorder")

    async def stop(self, timeout_s: float | None = None) -> None:
        """Write every buffered record, then end the writer task.

        With the database unreachable for longer than ``timeout_s``, the records still
        buffered are logged in full at ERROR (``usage records not written``) so that an
        operator can replay them; the scale-out mode spools them to disk instead.
        """
        self._stopping = True
        if timeout_s is not None:
            self._deadline = asyncio.get_running_loop().time() + timeout_s
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None

    @property
    def degraded(self) -> bool:
        """Records wait on disk for the database."""
        return self.spool is not None and self.spool.pending

    async def flush(self) -> None:
        """Write everything buffered now, and replay the spool if the database takes it
        (tests and shutdown use this)."""
        while self._buffer:
            await self._write_batch()
        if self.degraded:
            with contextlib.suppress(Exception):
                await self._replay()

    async def _run(self) -> None:
        failures = 0  # in a row
        loop = asyncio.get_running_loop()
        while True:
            if failures:
                await asyncio.sleep(_RETRY.delay(failures - 1))
            elif not self._stopping and len(self._buffer) < self._batch_size and not self._waiters:
                await woken(self._wake, self._interval)
                self._wake.clear()
            try:
                while self._buffer:
                    await self._write_batch()
                if self.degraded:
                    await self._replay()
                failures = 0
            except Exception as exc:
                # Unspooled rows stay buffered and spooled ones on disk; retried next pass.
                failures += 1
                self.database_ok = False
                self._metrics.ledger_write_failures.inc()
                log.error(
                    "usage write failed; retrying",
                    extra={"pending": len(self._buffer), "error": repr(exc)},
                )
            if self._stopping:
                # Spooled records are on disk already: the next start replays them, so a
                # stop does not wait for the database to come back.
                done = not self._buffer
                late = self._deadline is not None and loop.time() > self._deadline
                if done or late:
                    if self._buffer:
                        self._give_up()
                    if self.spool is not None:
                        self.spool.close()  # what is left is adopted by the next start
                    return

    def _give_up(self) -> None:
        for record in self._buffer:
            log.error("usage record not written", extra={"record": record.row()})
            waiter = self._waiters.pop(record.id, None)
            if waiter is not None and not waiter.done():
                waiter.set_exception(StoreUnavailable("usage record could not be written"))
        self._buffer.clear()

    async def _write_batch(self) -> None:
        # One writer at a time: ``flush`` may run beside the background task.
        async with self._lock:
            count = min(self._batch_size, len(self._buffer))
            rows = [self._buffer[i].row() for i in range(count)]
            spool = self.spool
            if spool is not None and spool.pending:
                # Behind what already waits: the ledger receives records in order.
                spool.own.append(rows)
                self._spooled(count)
            else:
                try:
                    await self._insert_checked(rows)
                    self.written += count
                    self.database_ok = True
                    self._metrics.ledger_records_written.inc(count)
                except Exception as exc:
                    if spool is None:
                        raise
                    self.database_ok = False
                    spool.own.append(rows)
                    self._spooled(count)
                    log.warning(
                        "database unavailable: usage records spooled to disk",
                        extra={"count": count, "error": repr(exc)},
                    )
            for _ in range(count):
                record = self._buffer.popleft()
                if self._waiters:
                    waiter = self._waiters.pop(record.id, None)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(None)

    def _spooled(self, count: int) -> None:
        self.spooled += count
        self._metrics.ledger_records_spooled.inc(count)

    async def _replay(self) -> None:
        """Insert spooled records, oldest first; raises when the database still refuses."""
        assert self.spool is not None
        async with self._lock:
            for spool_file in list(self.spool.files()):
                while spool_file.pending:
                    rows, offset = spool_file.read(self._batch_size)
                    if not rows:
                        log.error("torn spool line dropped", extra={"file": str(spool_file.path)})
                        spool_file.consumed(spool_file.path.stat().st_size)
                        break
                    await self._insert_checked(rows)
                    spool_file.consumed(offset)
                    self.written += len(rows)
                    self._metrics.ledger_records_written.inc(len(rows))
                self.spool.finished(spool_file)
            self.database_ok = True

    async def _insert_checked(self, rows: list[dict[str, Any]]) -> None:
        try:
            await self._insert(rows)
        except (DataError, IntegrityError):
            # One bad row must not hold the ledger hostage: write the batch row by
            # row, and set aside (log in full, count) the rows the database refuses.
            for row in rows:
                try:
                    await self._insert([row])
                except (DataError, IntegrityError) as exc:
                    self._metrics.ledger_records_rejected.inc()
                    log.error(
                        "usage record refused by the database",
                        extra={"record": row, "error": repr(exc)},
                    )

    async def _insert(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        async with self._engine.begin() as conn:
            statement = insert_ignoring(usage_records, conn.dialect.name, "id")
            companion = self._companion
            booking = companion is not None and companion.prepare(rows)
            # The ids inserted: a record already in the ledger (a replay, a retry) is
            # skipped, and so neither posted nor rolled up a second time.
            result = await conn.execute(statement.returning(usage_records.c.id), rows)
            written = set(result.scalars())
            if companion is not None and booking:
                await companion.book(conn, rows, written)
            await roll_up(conn, inserted(rows, written))
        if self._on_written is not None:
            try:
                self._on_written(rows)
            except Exception:
                log.exception("usage batch listener failed")


def inserted(rows: list[dict[str, Any]], written: set[str]) -> list[dict[str, Any]]:
    """The rows the insert wrote: those whose id it returned, each id once (the first
    row of an id given twice is the one inserted; the second met the first)."""
    left = set(written)
    fresh = []
    for row in rows:
        if row["id"] in left:
            left.discard(row["id"])
            fresh.append(row)
    return fresh
