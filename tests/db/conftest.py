"""Database fixtures: SQLite in tmp_path, a database on the real PostgreSQL server
(``tests/postgres_server.py``), and ``db_url``/``db_engine`` to run a test on both."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tollhouse.config import Settings, load_settings
from tollhouse.db import create_engine


def settings_for(url: str, **overrides) -> Settings:
    return load_settings(env={"TOLLHOUSE_CONFIG": os.devnull}, database_url=url, **overrides)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'tollhouse.db'}"


@pytest.fixture
async def sqlite_engine(sqlite_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(settings_for(sqlite_url))
    yield engine
    await engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    """The same test on SQLite and on Postgres."""
    return str(request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url"))


@pytest.fixture
async def db_engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(settings_for(db_url))
    yield engine
    await engine.dispose()


@pytest.fixture
async def pg_engine(pg_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(settings_for(pg_url))
    yield engine
    await engine.dispose()
