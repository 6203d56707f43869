"""Alert fixtures: a migrated database on SQLite, then on Postgres."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tollhouse.config import load_settings
from tollhouse.db import create_engine
from tollhouse.db.schema import upgrade


@pytest.fixture
async def engine(both_stores: dict[str, str], tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    url = both_stores.get("database_url", f"sqlite+aiosqlite:///{tmp_path / 'alerts.db'}")
    settings = load_settings(env={"TOLLHOUSE_CONFIG": "/dev/null"}, database_url=url)
    engine = create_engine(settings)
    await upgrade(engine)
    yield engine
    await engine.dispose()
