"""Database fixtures: ``db_engine``, an empty database (no migration applied) on SQLite,
then on Postgres, for the migration and column-type tests. The servers and the migrated
``engine``, ``sqlite_engine`` and ``pg_engine`` are in ``tests/conftest.py``."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from tests.support import engine_for


@pytest.fixture
async def db_engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    async with engine_for(db_url, migrated=False) as engine:
        yield engine
