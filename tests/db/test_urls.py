"""Every accepted form of ``database_url`` opens a real database and migrates it: the
plain forms other tools write run on the async drivers (``docs/database.md``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text
from tests.support import settings_for

from tollhouse.db import create_engine
from tollhouse.db.schema import current, head, upgrade


async def migrated_revision(url: str) -> tuple[str, str | None]:
    """The driver the engine for ``url`` runs on and the revision after ``upgrade``."""
    engine = create_engine(settings_for(url))
    try:
        await upgrade(engine)
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT 1"))).scalar() == 1
        return engine.url.drivername, await current(engine)
    finally:
        await engine.dispose()


@pytest.mark.parametrize("scheme", ["sqlite", "sqlite+aiosqlite"])
async def test_sqlite_relative_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scheme):
    monkeypatch.chdir(tmp_path)
    assert await migrated_revision(f"{scheme}:///x.db") == ("sqlite+aiosqlite", head())
    assert (tmp_path / "x.db").is_file()


@pytest.mark.parametrize("scheme", ["sqlite", "sqlite+aiosqlite"])
async def test_sqlite_absolute_path(tmp_path: Path, scheme):
    path = tmp_path / "abs" / "x.db"
    path.parent.mkdir()
    url = f"{scheme}:///{path}"
    assert url.startswith(f"{scheme}:////")  # four slashes: the path is absolute
    assert await migrated_revision(url) == ("sqlite+aiosqlite", head())
    assert path.is_file()


@pytest.mark.parametrize("scheme", ["postgresql", "postgres", "postgresql+asyncpg"])
async def test_postgres(pg_url: str, scheme):
    _, rest = pg_url.split("://", 1)
    assert await migrated_revision(f"{scheme}://{rest}") == ("postgresql+asyncpg", head())
