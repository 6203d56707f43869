"""``tollhouse db upgrade|downgrade|current``: schema migrations."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import TypeVar

import click
from sqlalchemy.ext.asyncio import AsyncEngine

from tollhouse.cli.options import config_option, settings_from
from tollhouse.db import create_engine, schema
from tollhouse.errors import ConfigError

T = TypeVar("T")


def on_database(config_file: str | None, action: Callable[[AsyncEngine], Awaitable[T]]) -> T:
    """Run ``action`` against the configured database, then close the engine."""

    async def run() -> T:
        try:
            engine = create_engine(settings_from(config_file))
        except ConfigError as exc:
            raise click.ClickException(exc.message) from None
        try:
            return await action(engine)
        finally:
            await engine.dispose()

    return asyncio.run(run())


@click.group()
def db() -> None:
    """Database schema migrations."""


@db.command()
@config_option
@click.argument("revision", default="head")
def upgrade(config_file: str | None, revision: str) -> None:
    """Apply migrations up to REVISION (default: head)."""

    async def action(engine: AsyncEngine) -> str | None:
        await schema.upgrade(engine, revision)
        return await schema.current(engine)

    click.echo(f"database at revision {on_database(config_file, action)}")


@db.command(context_settings={"ignore_unknown_options": True})
@config_option
@click.argument("revision")
def downgrade(config_file: str | None, revision: str) -> None:
    """Revert migrations down to REVISION (`base` drops every table, `-1` one step)."""

    async def action(engine: AsyncEngine) -> str | None:
        await schema.downgrade(engine, revision)
        return await schema.current(engine)

    click.echo(f"database at revision {on_database(config_file, action) or 'base (empty)'}")


@db.command()
@config_option
def current(config_file: str | None) -> None:
    """Show the database's revision and the newest one shipped."""
    revision = on_database(config_file, schema.current)
    click.echo(f"current: {revision or 'base (empty)'}\nhead:    {schema.head()}")
