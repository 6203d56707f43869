"""Migrations: ``tollhouse db upgrade|downgrade|current`` and the embedded auto-upgrade.

Alembic runs on a connection we hand it (``config.attributes["connection"]``), inside
``AsyncConnection.run_sync``, so the same code serves the CLI and the server's startup.
One migration tree serves both dialects: the column types in ``db/types.py`` pick the
right storage per dialect, and a migration branches on ``op.get_bind().dialect.name``
where the dialects truly differ.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

_MIGRATIONS = Path(__file__).with_name("migrations")
# Every domain package with tables; imported so autogenerate sees them all.
_MODEL_MODULES = (
    "tollhouse.ledger.models",
    "tollhouse.governance.models",
    "tollhouse.alerts.models",
    "tollhouse.credits.models",
    "tollhouse.policies.models",
    "tollhouse.sandboxes.models",
    "tollhouse.agents.models",
)


def import_all_models() -> None:
    for name in _MODEL_MODULES:
        importlib.import_module(name)


def _config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    config.attributes["connection"] = connection
    return config


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Apply migrations up to ``revision``."""
    async with engine.begin() as conn:
        await conn.run_sync(lambda c: command.upgrade(_config(c), revision))


async def downgrade(engine: AsyncEngine, revision: str) -> None:
    """Revert migrations down to ``revision`` (``base`` removes every table)."""
    async with engine.begin() as conn:
        await conn.run_sync(lambda c: command.downgrade(_config(c), revision))


async def current(engine: AsyncEngine) -> str | None:
    """The revision the database is at, or ``None`` for an empty database."""

    def read(conn: Connection) -> Any:
        return MigrationContext.configure(conn).get_current_revision()

    async with engine.connect() as conn:
        revision = await conn.run_sync(read)
    return str(revision) if revision is not None else None


def head() -> str:
    """The newest revision shipped with this version of Tollhouse."""
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    heads = ScriptDirectory.from_config(config).get_heads()
    return heads[0]
