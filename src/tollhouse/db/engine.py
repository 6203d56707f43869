"""The async engine: SQLite in WAL mode by default, Postgres by URL.

``settings.database_url`` arrives on its async driver (``sqlite+aiosqlite`` or
``postgresql+asyncpg``): ``Settings`` maps the plain forms and refuses the rest.

Every engine hides SQL parameters (``hide_parameters``): a failed statement's error and
log line show the SQL but not the values bound to it, which can be key hashes, channel
secrets or customer names. SQLite files are the owner's alone (``0600``).
"""

from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Any

from sqlalchemy import Insert, Table, event, make_url, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from tollhouse.config import Settings
from tollhouse.errors import ConfigError


def create_engine(settings: Settings) -> AsyncEngine:
    """Build the process's engine for ``settings.database_url``.

    SQLite gets WAL (readers never block the writer), a busy timeout instead of instant
    ``database is locked`` errors, and foreign keys on.
    """
    url = settings.database_url  # on its async driver already (config.async_database_url)
    if settings.is_sqlite:
        # aiosqlite logs every call with its parameters at DEBUG: keep it out of a
        # debug-level log, where those values would land.
        logging.getLogger("aiosqlite").setLevel(logging.INFO)
        _runs_functions()
        path = _sqlite_path(url)
        if path is not None:
            _private(path)
        engine = create_async_engine(url, hide_parameters=True, connect_args={"timeout": 30})

        def on_connect(dbapi_connection: Any, record: Any) -> None:
            if path is not None:
                _private(path, create=False)
            _sqlite_pragmas(dbapi_connection, record)

        event.listen(engine.sync_engine, "connect", on_connect)
        return engine
    engine = create_async_engine(
        url,
        hide_parameters=True,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_max_overflow,
        pool_timeout=settings.database_pool_timeout_s,
        # No ping per checkout (three round trips on asyncpg: a third of a short
        # transaction's time); ``_alive`` drops connections the server has closed.
        pool_pre_ping=False,
        connect_args={
            "timeout": settings.database_connect_timeout_s,
            # Server-side bound on every statement: a stuck query fails (and the
            # ledger spools) instead of holding a pooled connection forever.
            "server_settings": {"statement_timeout": str(settings.database_statement_timeout_ms)},
        },
    )
    event.listen(engine.sync_engine, "checkout", _alive)
    return engine


def _runs_functions() -> None:
    """The session log's hot writes run whole transactions in aiosqlite's thread
    (``agents/rawlog.py``) through ``Connection._execute``: an aiosqlite without it is
    refused here, with the fix, rather than failing on the first message."""
    import aiosqlite

    if not hasattr(aiosqlite.Connection, "_execute"):
        raise ConfigError(
            f"aiosqlite {getattr(aiosqlite, '__version__', '?')} has no Connection._execute, "
            "which Tollhouse needs: install aiosqlite>=0.20,<1"
        )


def _alive(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    """A pooled connection the server closed (a restart, a failover) is thrown away at
    checkout and another is taken (SQLAlchemy retries on ``DisconnectionError``). asyncpg
    notices the closed socket on its own, so this costs no round trip; a connection that
    died silently fails its first statement instead, which the callers' retries and the
    ledger's spool already handle."""
    raw = getattr(dbapi_connection, "_connection", None)
    if raw is not None and raw.is_closed():
        raise DisconnectionError("the database server closed this connection")


def _sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL; ``None`` for an in-memory database."""
    database = make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def _private(path: Path, *, create: bool = True) -> None:
    """Make the database file (and its ``-wal``/``-shm``) ``0600``.

    The file is created ``0600`` before SQLite opens it, so it is never readable by
    others, not even for a moment; SQLite gives the ``-wal`` and ``-shm`` it creates
    the database file's mode. Files of an older install are closed up on connect.
    A missing directory is left for SQLite to report, as before.
    """
    if create and path.parent.is_dir():
        with contextlib.suppress(FileExistsError):
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    for name in (str(path), f"{path}-wal", f"{path}-shm", f"{path}-journal"):
        with contextlib.suppress(FileNotFoundError, PermissionError):
            if os.stat(name).st_mode & 0o077:
                os.chmod(name, 0o600)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
    finally:
        cursor.close()


async def ping(engine: AsyncEngine) -> None:
    """One round trip; raises when the database cannot answer."""
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


def insert_ignoring(table: Table, dialect: str, *unique: str) -> Insert:
    """``INSERT … ON CONFLICT (unique) DO NOTHING`` on SQLite or Postgres: a retried or
    concurrent write of the same row is skipped, never doubled."""
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    return insert(table).on_conflict_do_nothing(index_elements=list(unique))
