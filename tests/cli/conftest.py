"""CLI fixtures: a CliRunner, and a config file pointing at a SQLite file in tmp_path."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from tests.support import engine_for

from tollhouse.cli import main
from tollhouse.ledger import UsageRecord, UsageRecorder
from tollhouse.ops.metrics import Metrics

Invoke = Callable[..., Result]


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "cli.db"


@pytest.fixture
def config(tmp_path: Path, db_path: Path) -> Path:
    path = tmp_path / "tollhouse.yaml"
    path.write_text(f"database_url: sqlite+aiosqlite:///{db_path}\n")
    return path


@pytest.fixture
def invoke(config: Path, tmp_path: Path) -> Invoke:
    """``invoke("db", "upgrade")``: run the CLI in-process with ``--config`` and a clean env."""
    runner = CliRunner()

    def run(*args: str, config_file: Path | None = config, env: dict[str, str] | None = None):
        argv = list(args)
        if config_file is not None:
            argv += ["--config", str(config_file)]
        # Unset the SDK and Tollhouse variables the developer's shell may carry.
        clean = {
            name: None
            for name in (
                "OPENAI_API_KEY",
                "OPENAI_BASE_URL",
                "ANTHROPIC_API_KEY",
                "ANTHROPIC_BASE_URL",
                "OPENROUTER_API_KEY",
                "TOLLHOUSE_CONFIG",
                "TOLLHOUSE_DATABASE_URL",
                "TOLLHOUSE_ADMIN_KEY",
                "TOLLHOUSE_SMOKE_KEY",
                "TOLLHOUSE_HOST",
                "TOLLHOUSE_WORKERS",
            )
        }
        return runner.invoke(main, argv, env={**clean, **(env or {})}, catch_exceptions=True)

    return run


@pytest.fixture
def write_records(db_path: Path) -> Callable[[Iterable[UsageRecord]], None]:
    """Write records through the real recorder into the CLI's database (migrated first)."""

    def write(records: Iterable[UsageRecord]) -> None:
        async def run() -> None:
            async with engine_for(f"sqlite+aiosqlite:///{db_path}") as engine:
                recorder = UsageRecorder(engine, Metrics())
                for record in records:
                    recorder.add(record)
                await recorder.flush()

        asyncio.run(run())

    return write
