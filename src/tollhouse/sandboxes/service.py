"""The pool as the operator runs it: seeding local sandboxes, registering static ones,
stats, ``sync``, ``cleanup``, ``auto-expire``, running a command in a sandbox, and the
reaper that does expiry, cleanup and refilling on its own every
``sandbox_reaper_interval_s`` (and at once when a lease took the last one). The track
side is ``broker.py``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from tollhouse.background import finished, woken
from tollhouse.config import Settings
from tollhouse.crypto import SecretBox, require_box
from tollhouse.errors import Conflict
from tollhouse.ops.metrics import Metrics
from tollhouse.sandboxes import pool
from tollhouse.sandboxes.backends import SandboxBackend, backends, sandbox_uid
from tollhouse.sandboxes.models import STATUSES, sandboxes
from tollhouse.sandboxes.runner import Limits, Outcome

log = logging.getLogger("tollhouse.sandboxes")
_s = sandboxes.c
_STUCK = timedelta(minutes=10)  # a ``deleting`` claim this old: its reaper died
_BATCH = 100  # sandboxes deleted per reaper pass


@dataclass(frozen=True, slots=True)
class Report:
    expired: int = 0
    deleted: int = 0
    recycled: int = 0
    failed: int = 0
    created: int = 0
    orphans_removed: int = 0
    missing: int = 0


class Pool:
    """The pool as its operator (and the reaper) sees it."""

    def __init__(
        self, engine: AsyncEngine, settings: Settings, metrics: Metrics, box: SecretBox | None
    ) -> None:
        self._engine = engine
        self._settings = settings
        self._metrics = metrics
        self._box = box
        self.backends: dict[str, SandboxBackend] = backends(Path(settings.sandbox_dir))
        self.exhausted = 0  # refusals for want of a sandbox, by this server
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.wake = asyncio.Event()  # set: the reaper passes now (a lease took one)
        self._running: dict[str, asyncio.Lock] = {}  # sandboxes running a command

    def credentials(self, row: Any) -> dict[str, str] | None:
        """A static sandbox's credentials, for the track holding it."""
        if row.secret is None:
            return None
        parsed: dict[str, str] = json.loads(require_box(self._box).decrypt(row.secret))
        return parsed

    # -- the operator's side ---------------------------------------------------------------

    async def seed(self, count: int) -> list[str]:
        """``count`` new local sandboxes, each with its work directory, available."""
        made = []
        for _ in range(count):
            made.append(await self._create_local())
        return made

    async def _create_local(self) -> str:
        backend = self.backends["local"]
        for _ in range(20):  # a uid another sandbox has: draw again
            sandbox_id = pool.new_sandbox_id()
            uid = sandbox_uid(self._settings.sandbox_uid_base, secrets.randbelow(1_000_000))
            now = datetime.now(UTC)
            try:
                async with self._engine.begin() as conn:
                    await conn.execute(
                        sandboxes.insert().values(
                            id=sandbox_id,
                            name=f"local-{sandbox_id[4:16]}",
                            backend="local",
                            status="available",
                            uid=uid,
                            created_at=now,
                            updated_at=now,
                        )
                    )
                    # The directory before the commit: a sandbox is never available
                    # without one (a failure rolls the row back; the directory is an
                    # orphan ``sync`` removes).
                    await backend.create(sandbox_id, uid)
            except IntegrityError:
                continue
            return sandbox_id
        raise Conflict("no free uid for a new sandbox: raise sandbox_uid_base's range")

    async def register(
        self,
        name: str,
        url: str | None,
        external_id: str | None,
        credentials: Mapping[str, str] | None,
    ) -> Any:
        """A static sandbox the operator runs, available at once."""
        secret = None
        if credentials:
            secret = require_box(self._box).encrypt(json.dumps(dict(credentials)))
        sandbox_id = pool.new_sandbox_id()
        now = datetime.now(UTC)
        try:
            async with self._engine.begin() as conn:
                await conn.execute(
                    sandboxes.insert().values(
                        id=sandbox_id,
                        name=name,
                        backend="static",
                        status="available",
                        external_id=external_id,
                        url=url,
                        secret=secret,
                        created_at=now,
                        updated_at=now,
                    )
                )
                return await pool.get(conn, sandbox_id)
        except IntegrityError:
            raise Conflict(f"a sandbox named {name!r} exists already") from None

    async def stats(self) -> dict[str, Any]:
        async with self._engine.connect() as conn:
            counted = (
                await conn.execute(
                    select(_s.backend, _s.status, func.count()).group_by(_s.backend, _s.status)
                )
            ).all()
            soonest = await conn.scalar(
                select(func.min(_s.expires_at)).where(_s.status == "allocated")
            )
        by_status = dict.fromkeys(STATUSES, 0)
        by_backend: dict[str, dict[str, int]] = {}
        for backend, status, count in counted:
            by_status[status] = by_status.get(status, 0) + count
            by_backend.setdefault(backend, dict.fromkeys(STATUSES, 0))[status] = count
        for status, count in by_status.items():
            self._metrics.sandboxes.labels(status).set(count)
        return {
            "total": sum(by_status.values()),
            "by_status": by_status,
            "by_backend": by_backend,
            "next_expiry": soonest,
            "exhausted": self.exhausted,
        }

    async def auto_expire(self, now: datetime | None = None) -> int:
        async with self._engine.begin() as conn:
            expired = await pool.expire_due(conn, now or datetime.now(UTC))
        if expired:
            log.info("leases expired", extra={"count": expired})
        return expired

    async def cleanup(self, now: datetime | None = None) -> Report:
        """Delete (or recycle) what is marked for deletion, in batches."""
        deleted = recycled = failed = 0
        while True:
            moment = now or datetime.now(UTC)
            async with self._engine.begin() as conn:
                claimed = await pool.claim_for_deletion(conn, moment, _BATCH, _STUCK)
            for row in claimed:
                ending = await self._end(row)
                deleted += ending == "deleted"
                recycled += ending == "recycled"
                failed += ending == "failed"
            if len(claimed) < _BATCH:
                return Report(deleted=deleted, recycled=recycled, failed=failed)

    async def _end(self, row: Any) -> str:
        now = datetime.now(UTC)
        try:
            ending = await self.backends[row.backend].destroy(row)
        except Exception as exc:  # the backend could not: kept, marked, visible in stats
            log.warning("sandbox deletion failed", extra={"sandbox": row.id, "error": str(exc)})
            async with self._engine.begin() as conn:
                await pool.failed(conn, row.id, f"deletion failed: {exc}", now)
            return "failed"
        async with self._engine.begin() as conn:
            if ending == "deleted":
                await pool.remove(conn, row.id)
            else:
                await pool.recycled(conn, row.id, now)
        return ending

    async def sync(self) -> Report:
        """Reconcile rows with their backends: a local sandbox whose directory is gone is
        ``failed``, a directory no row names is removed, and the pool is brought up to
        ``sandbox_pool_target``."""
        async with self._engine.connect() as conn:
            rows = (await conn.execute(select(sandboxes))).all()
        missing = 0
        for row in rows:
            live = row.status in ("available", "allocated")
            if live and not await self.backends[row.backend].exists(row):
                async with self._engine.begin() as conn:
                    await pool.failed(
                        conn, row.id, "its backend no longer has it", datetime.now(UTC)
                    )
                missing += 1
        removed = 0
        for backend in self.backends.values():
            removed += len(await backend.orphans({r.id for r in rows}))
        created = await self._top_up()
        return Report(created=created, orphans_removed=removed, missing=missing)

    async def _top_up(self) -> int:
        target = self._settings.sandbox_pool_target
        if not target:
            return 0
        async with self._engine.connect() as conn:
            available = await conn.scalar(
                select(func.count()).where(_s.backend == "local", _s.status == "available")
            )
        short = max(0, target - int(available or 0))
        for _ in range(short):
            await self._create_local()
        return short

    async def execute(
        self, sandbox_id: str, argv: Sequence[str], stdin: bytes | None = None
    ) -> Outcome:
        """Run a command in a sandbox that is in the pool or leased, one at a time per
        sandbox in this process (its commands share a uid, which every run ends by
        killing whole)."""
        async with self._engine.connect() as conn:
            row = await pool.get(conn, sandbox_id)
        if row.status not in ("available", "allocated"):
            raise Conflict(f"sandbox {sandbox_id!r} is {row.status}: commands run in live ones")
        lock = self._running.setdefault(sandbox_id, asyncio.Lock())
        try:
            async with lock:
                return await self.backends[row.backend].execute(row, argv, self.limits(), stdin)
        finally:
            if not lock.locked():
                self._running.pop(sandbox_id, None)

    def limits(self) -> Limits:
        s = self._settings
        return Limits(
            cpu_seconds=s.sandbox_exec_cpu_s,
            memory_bytes=s.sandbox_exec_memory_mb * 2**20,
            file_bytes=s.sandbox_exec_file_mb * 2**20,
            open_files=s.sandbox_exec_open_files,
            processes=s.sandbox_exec_processes,
            wall_seconds=s.sandbox_exec_wall_s,
            output_bytes=s.sandbox_exec_output_kb * 1024,
        )

    # -- the reaper ------------------------------------------------------------------------

    async def start(self) -> None:
        self._task = asyncio.create_task(self._reap(), name="tollhouse-sandbox-reaper")

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Let a pass under way finish (a deletion is not cut in half), then stop; cancelled
        past ``timeout_s``."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        self.wake.set()
        await finished(task, timeout_s)

    async def reap(self) -> Report:
        """One pass: expire, delete, refill."""
        expired = await self.auto_expire()
        ended = await self.cleanup()
        created = await self._top_up()
        await self.stats()  # the pool-size gauges
        return Report(
            expired=expired,
            deleted=ended.deleted,
            recycled=ended.recycled,
            failed=ended.failed,
            created=created,
        )

    async def _reap(self) -> None:
        while not self._stopping:
            try:
                await self.reap()
            except Exception:  # the database is away: the next pass tries again
                log.exception("sandbox reaper pass failed")
            if not self._stopping:
                await woken(self.wake, self._settings.sandbox_reaper_interval_s)
                self.wake.clear()
