"""What the database layer leaves behind: no SQL parameter in an error or a log line,
and database files only their owner can read."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from tests.support import settings_for

from tollhouse.db import create_engine
from tollhouse.db.schema import upgrade

SECRET = "sk-live-parameter-value-4711"


async def test_a_failing_statement_shows_no_parameter(db_engine, caplog):
    caplog.set_level(logging.DEBUG)
    with pytest.raises(DBAPIError) as failed:
        async with db_engine.connect() as conn:
            await conn.execute(text("SELECT * FROM no_such_table WHERE x = :v"), {"v": SECRET})
    logging.getLogger("test").exception("statement failed", exc_info=failed.value)
    assert "no_such_table" in str(failed.value)  # the statement is still there to debug
    assert SECRET not in str(failed.value) and SECRET not in repr(failed.value)
    assert SECRET not in caplog.text


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


async def test_sqlite_files_are_private(tmp_path: Path):
    old = os.umask(0o022)
    try:
        path = tmp_path / "tollhouse.db"
        engine = create_engine(settings_for(f"sqlite+aiosqlite:///{path}"))
        try:
            await upgrade(engine)
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1 FROM alembic_version"))
                files = [path, Path(f"{path}-wal"), Path(f"{path}-shm")]
                assert all(f.exists() for f in files), files
                assert {f.name: mode(f) for f in files} == {f.name: 0o600 for f in files}
        finally:
            await engine.dispose()
    finally:
        os.umask(old)


async def test_an_existing_readable_sqlite_file_is_made_private(tmp_path: Path):
    path = tmp_path / "old.db"
    path.touch(mode=0o644)
    os.chmod(path, 0o644)
    engine = create_engine(settings_for(f"sqlite+aiosqlite:///{path}"))
    try:
        async with engine.connect() as conn:
            await conn.execute(text("SELECT 1"))
        assert mode(path) == 0o600
    finally:
        await engine.dispose()
