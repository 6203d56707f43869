"""Pooled Postgres connections the server closed are replaced at checkout without a ping
per checkout: after every backend of the pool is terminated (a restart, a failover), the
next transactions run on fresh connections and none of them fails."""

from __future__ import annotations

import asyncio

from sqlalchemy import text


async def test_connections_the_server_closed_are_replaced(pg_engine):
    async def backend_pid() -> int:
        async with pg_engine.connect() as conn:
            return int(await conn.scalar(text("SELECT pg_backend_pid()")))

    before = set(await asyncio.gather(*(backend_pid() for _ in range(4))))
    async with pg_engine.connect() as conn:
        survivor = int(await conn.scalar(text("SELECT pg_backend_pid()")))
        killed = await conn.scalar(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )
    assert killed >= 1
    await asyncio.sleep(0.2)  # the sockets' ends reach the client
    after = await asyncio.gather(*(backend_pid() for _ in range(8)))  # none fails
    assert len(after) == 8
    assert not set(after) & (before - {survivor})  # the terminated ones were not reused
