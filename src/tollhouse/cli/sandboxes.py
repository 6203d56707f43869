"""``tollhouse sandboxes seed|list|stats|exec|tokens``: the sandbox pool from the shell
(docs/sandboxes.md).

On the configured database directly, through the same pool service as the admin API, so
a sandbox seeded here has its work directory under ``sandbox_dir`` as one seeded over
HTTP has; a token created here works on every server within its governance poll.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TypeVar

import click
from sqlalchemy.ext.asyncio import AsyncEngine

from tollhouse.cli.options import config_option, settings_from
from tollhouse.cli.plumbing import json_option, run_engine, show
from tollhouse.cli.tables import render_table
from tollhouse.crypto import SecretBox
from tollhouse.ops.metrics import Metrics
from tollhouse.sandboxes import pool, tokens
from tollhouse.sandboxes.schemas import (
    SandboxPage,
    SandboxRead,
    Seeded,
    StatsRead,
    TokenRead,
    TokenWritten,
)
from tollhouse.sandboxes.service import Pool

T = TypeVar("T")


def _on_pool(config_file: str | None, action: Callable[[Pool, AsyncEngine], Awaitable[T]]) -> T:
    settings = settings_from(config_file)
    secret = settings.secret_key.get_secret_value() if settings.secret_key else None

    async def on(engine: AsyncEngine) -> T:
        return await action(
            Pool(engine, settings, Metrics(), SecretBox.from_setting(secret)), engine
        )

    return run_engine(config_file, on)


@click.group()
def sandboxes() -> None:
    """The sandbox pool: seed local sandboxes, list them, run a command in one."""


@sandboxes.command("seed")
@config_option
@click.option("--count", type=click.IntRange(1, 10000), required=True, help="How many.")
@json_option
def seed(config_file: str | None, count: int, as_json: bool) -> None:
    """Create COUNT local sandboxes, each with its work directory, available."""
    made = _on_pool(config_file, lambda p, _e: p.seed(count))
    show(as_json, Seeded(created=made, count=len(made)), f"created {len(made)} sandboxes")


@sandboxes.command("list")
@config_option
@click.option(
    "--status",
    type=click.Choice(["available", "allocated", "pending_deletion", "deleting", "failed"]),
    default=None,
)
@click.option("--limit", type=click.IntRange(1, 100000), default=1000)
@json_option
def list_sandboxes(config_file: str | None, status: str | None, limit: int, as_json: bool) -> None:
    """The pool, oldest first."""

    async def listed(_p: Pool, engine: AsyncEngine) -> list[SandboxRead]:
        async with engine.connect() as conn:
            rows, _ = await pool.page(
                conn, status=status, backend=None, track_id=None, limit=limit, cursor=None
            )
        return [SandboxRead.from_row(row) for row in rows]

    items = _on_pool(config_file, listed)
    if as_json:
        show(True, SandboxPage(sandboxes=items, count=len(items), next_cursor=None), "")
        return
    if not items:
        click.echo("no sandboxes")
        return
    rows = [
        [s.id, s.name, s.backend, s.status, s.track_id or "", _when(s.expires_at)] for s in items
    ]
    click.echo(render_table(["id", "name", "backend", "status", "track", "expires"], rows))


def _when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ") if moment else ""


@sandboxes.command("stats")
@config_option
@json_option
def stats(config_file: str | None, as_json: bool) -> None:
    """The pool by status and backend."""
    found = StatsRead.model_validate(_on_pool(config_file, lambda p, _e: p.stats()))
    rows = [[status, count] for status, count in found.by_status.items()]
    text = render_table(["status", "sandboxes"], rows) + f"\ntotal {found.total}"
    if found.next_expiry is not None:
        text += f"; next lease ends {_when(found.next_expiry)}"
    show(as_json, found, text)


@sandboxes.command("exec", context_settings={"ignore_unknown_options": True})
@config_option
@click.argument("sandbox_id")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def execute(config_file: str | None, sandbox_id: str, command: tuple[str, ...]) -> None:
    """Run COMMAND in a local sandbox, under the limits its tools run with.

    Its output is printed as it was kept (up to sandbox_exec_output_kb); the exit status
    is the command's (128 + the signal that stopped it)."""
    outcome = _on_pool(config_file, lambda p, _e: p.execute(sandbox_id, list(command)))
    sys.stdout.buffer.write(outcome.stdout)
    sys.stderr.buffer.write(outcome.stderr)
    if outcome.stopped_by is not None:
        click.echo(f"stopped: {outcome.stopped_by} limit", err=True)
    code = outcome.exit_code if outcome.exit_code is not None else 128 + (outcome.signal or 9)
    sys.exit(code)


@sandboxes.group("tokens")
def broker_tokens() -> None:
    """Broker tokens: what tracks present to lease a sandbox."""


@broker_tokens.command("create")
@config_option
@click.argument("name")
@click.option("--tag", "tags", multiple=True, help="A tag policies match (repeatable).")
@json_option
def create_token(config_file: str | None, name: str, tags: tuple[str, ...], as_json: bool) -> None:
    """Create a broker token; its value is printed this once."""

    async def made(_p: Pool, engine: AsyncEngine) -> TokenWritten:
        async with engine.begin() as conn:
            row, value = await tokens.create(conn, name, list(tags), datetime.now(UTC))
        return TokenWritten(token=TokenRead.from_row(row), value=value)

    written = _on_pool(config_file, made)
    show(as_json, written, f"{written.value}\n(id {written.token.id}; shown once)")
