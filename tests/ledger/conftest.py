"""Ledger fixtures: a migrated database — SQLite in tmp_path, then a fresh Postgres
database — and a record factory. Every test that uses ``engine`` runs on both."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine
from tests.ledger.records import T0, usage_record

from tollhouse.config import load_settings
from tollhouse.db import create_engine
from tollhouse.db.schema import upgrade
from tollhouse.ledger import UsageRecord

RecordFactory = Callable[..., UsageRecord]


@pytest.fixture
def make_record() -> RecordFactory:
    """``make_record(**fields)``: records with unique ids a second apart, from T0 on."""
    counter = itertools.count()

    def factory(**fields: Any) -> UsageRecord:
        n = next(counter)
        fields.setdefault("id", f"req_{n:06d}")
        fields.setdefault("created_at", T0 + timedelta(seconds=n))
        return usage_record(**fields)

    return factory


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'ledger.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger_url(request: pytest.FixtureRequest, sqlite_url: str) -> str:
    if request.param == "postgresql":
        return str(request.getfixturevalue("pg_url"))
    return sqlite_url


@pytest.fixture
async def engine(ledger_url: str) -> AsyncIterator[AsyncEngine]:
    settings = load_settings(env={"TOLLHOUSE_CONFIG": "/dev/null"}, database_url=ledger_url)
    engine = create_engine(settings)
    await upgrade(engine)
    yield engine
    await engine.dispose()


@pytest.fixture
async def sqlite_ledger(sqlite_url: str) -> AsyncIterator[AsyncEngine]:
    """The migrated SQLite database alone, for what only SQLite does."""
    settings = load_settings(env={"TOLLHOUSE_CONFIG": "/dev/null"}, database_url=sqlite_url)
    engine = create_engine(settings)
    await upgrade(engine)
    yield engine
    await engine.dispose()
