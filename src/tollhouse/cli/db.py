"""``tollhouse db upgrade|downgrade|current``: schema migrations."""

from __future__ import annotations

import asyncio

import click

from tollhouse.cli.options import config_option, settings_from
from tollhouse.db import create_engine, schema


@click.group()
def db() -> None:
    """Database schema migrations."""


@db.command()
@config_option
@click.argument("revision", default="head")
def upgrade(config_file: str | None, revision: str) -> None:
    """Apply migrations up to REVISION (default: head)."""

    async def run() -> str | None:
        engine = create_engine(settings_from(config_file))
        try:
            await schema.upgrade(engine, revision)
            return await schema.current(engine)
        finally:
            await engine.dispose()

    click.echo(f"database at revision {asyncio.run(run())}")


@db.command()
@config_option
@click.argument("revision")
def downgrade(config_file: str | None, revision: str) -> None:
    """Revert migrations down to REVISION (`base` drops every table, `-1` one step)."""

    async def run() -> str | None:
        engine = create_engine(settings_from(config_file))
        try:
            await schema.downgrade(engine, revision)
            return await schema.current(engine)
        finally:
            await engine.dispose()

    click.echo(f"database at revision {asyncio.run(run()) or 'base (empty)'}")


@db.command()
@config_option
def current(config_file: str | None) -> None:
    """Show the database's revision and the newest one shipped."""

    async def run() -> str | None:
        engine = create_engine(settings_from(config_file))
        try:
            return await schema.current(engine)
        finally:
            await engine.dispose()

    click.echo(f"current: {asyncio.run(run()) or 'base (empty)'}\nhead:    {schema.head()}")
