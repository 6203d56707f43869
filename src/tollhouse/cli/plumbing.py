"""What the commands that work on the database share: exact amounts as options, a body
validated as the admin API validates it, one transaction per command, ``--json``."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

import click
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tollhouse.cli.options import settings_from
from tollhouse.db import create_engine
from tollhouse.db.schema import upgrade
from tollhouse.errors import TollhouseError
from tollhouse.web.responses import dumps
from tollhouse.web.validation import parse

T = TypeVar("T")


class Exact(click.ParamType[Decimal]):
    """A decimal number, read exactly (never through a float)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def convert(self, value: Any, param: Any, ctx: Any) -> Decimal:
        try:
            amount = Decimal(str(value))
        except InvalidOperation:
            amount = Decimal("NaN")
        if not amount.is_finite():
            self.fail(f"{value!r} is not a number (e.g. 10 or 0.5)", param, ctx)
        return amount


USD = Exact("USD")
RATIO = Exact("RATIO")


def body(model: type[BaseModel], data: dict[str, Any]) -> Any:
    """``data`` validated against an admin API body model; a usage error naming the field."""
    try:
        return parse(model, data)
    except TollhouseError as exc:
        raise click.UsageError(exc.message) from None


def run_engine(
    config_file: str | None,
    action: Callable[[AsyncEngine], Awaitable[T]],
    *,
    migrate: bool = True,
    failure: type[click.ClickException] = click.ClickException,
) -> T:
    """Run ``action`` on an engine for the configured database, disposed after; every
    error a user can act on (configuration, database) becomes ``failure``. The schema is
    upgraded first when ``auto_migrate`` is on, unless not to ``migrate``."""
    try:
        settings = settings_from(config_file)
    except click.ClickException as exc:
        raise failure(exc.message) from None

    async def run() -> T:
        try:
            engine = create_engine(settings)
        except TollhouseError as exc:
            raise failure(exc.message) from None
        try:
            if migrate and settings.auto_migrate:
                await upgrade(engine)
            return await action(engine)
        except TollhouseError as exc:
            raise failure(exc.message) from None
        except DBAPIError as exc:
            raise failure(database_error(exc)) from None
        finally:
            await engine.dispose()

    return asyncio.run(run())


def run_db(
    config_file: str | None,
    action: Callable[[AsyncConnection], Awaitable[T]],
    *,
    write: bool = False,
) -> T:
    """Run ``action`` in one transaction (``write``) or on one connection."""

    async def on(engine: AsyncEngine) -> T:
        if write:
            async with engine.begin() as conn:
                return await action(conn)
        async with engine.connect() as conn:
            return await action(conn)

    return run_engine(config_file, on)


def database_error(exc: DBAPIError) -> str:
    return f"database error: {exc.orig} (is it migrated? `tollhouse db upgrade`)"


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON (as the API).")


def print_json(data: Any) -> None:
    click.echo(dumps(data, indent=True).decode())


def show(as_json: bool, data: Any, text: str) -> None:
    if as_json:
        print_json(data)
    else:
        click.echo(text)
