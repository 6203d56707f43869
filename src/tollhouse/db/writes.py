"""``writing(engine)``: ``engine.begin()``, one at a time per process on SQLite.

SQLite has one write lock per database. A writer that finds it taken does not queue: its
busy handler sleeps and tries again, 1, 2, 5, 10… ms at a time, so two short write
transactions that overlap cost the second one a sleep longer than both. The agents'
hot path writes often and briefly (an event per streamed delta), so its transactions go
through an ``asyncio.Lock`` here instead: a writer waits for the one before it and starts
the moment it commits. Other processes on the same file still meet the busy handler.
On Postgres, rows are locked, not the database: ``writing`` is ``begin`` and nothing else.
"""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

_locks: weakref.WeakKeyDictionary[Any, asyncio.Lock] = weakref.WeakKeyDictionary()


@contextlib.asynccontextmanager
async def writing(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    if engine.dialect.name != "sqlite":
        async with engine.begin() as conn:
            yield conn
        return
    async with lock_of(engine), engine.begin() as conn:
        yield conn


def lock_of(engine: AsyncEngine) -> asyncio.Lock:
    """The process's lock on ``engine``'s writes (SQLite)."""
    lock = _locks.get(engine.sync_engine)
    if lock is None:
        lock = _locks[engine.sync_engine] = asyncio.Lock()
    return lock
