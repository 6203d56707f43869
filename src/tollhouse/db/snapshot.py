"""``read_snapshot(engine)``: a connection whose every read sees the same committed state.

For checks that compare one table with another (``tollhouse ledger verify``) while
servers keep writing: two reads of one check must not straddle a commit. Repeatable read
(and read only) on Postgres; one read transaction on SQLite, where WAL gives it a
snapshot of its own. Nothing is written; the transaction is rolled back at the end.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine


@contextlib.asynccontextmanager
async def read_snapshot(engine: AsyncEngine) -> AsyncIterator[AsyncConnection]:
    async with engine.connect() as conn:
        if conn.dialect.name == "postgresql":
            await conn.execution_options(
                isolation_level="REPEATABLE READ", postgresql_readonly=True
            )
        else:
            # pysqlite starts no transaction for reads: begin one, so that every query
            # reads the same WAL snapshot; closing the connection rolls it back.
            await conn.exec_driver_sql("BEGIN")
        try:
            yield conn
        finally:
            await conn.rollback()
