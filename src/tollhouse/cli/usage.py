"""``tollhouse usage``: spend from the ledger as a table."""

from __future__ import annotations

import asyncio
from typing import get_args

import click

from tollhouse.cli.options import config_option, settings_from
from tollhouse.cli.tables import render_table
from tollhouse.db import create_engine
from tollhouse.errors import ConfigError, ValidationFailed
from tollhouse.ledger.service import GroupBy, SpendRow, UsageFilter, spend_by
from tollhouse.money import format_usd
from tollhouse.web.query import time_param


@click.command()
@config_option
@click.option(
    "--by", "group", type=click.Choice(get_args(GroupBy)), default="model", show_default=True
)
@click.option("--key", "key_id", default=None, help="Only this virtual key id.")
@click.option("--team", "team_id", default=None, help="Only this team id.")
@click.option("--customer", "customer_id", default=None, help="Only this customer id.")
@click.option("--model", default=None, help="Only this model.")
@click.option("--since", default=None, help="ISO 8601 time or Unix seconds.")
@click.option("--until", default=None, help="ISO 8601 time or Unix seconds.")
def usage(
    config_file: str | None,
    group: GroupBy,
    key_id: str | None,
    team_id: str | None,
    customer_id: str | None,
    model: str | None,
    since: str | None,
    until: str | None,
) -> None:
    """Requests, tokens and exact spend, grouped by key, team, customer, model or day."""
    settings = settings_from(config_file)
    try:
        where = UsageFilter(
            key_id=key_id,
            team_id=team_id,
            customer_id=customer_id,
            model=model,
            since=time_param(since, "since"),
            until=time_param(until, "until"),
        )
    except ValidationFailed as exc:
        raise click.BadParameter(exc.message) from None

    async def run() -> list[SpendRow]:
        try:
            engine = create_engine(settings)
        except ConfigError as exc:
            raise click.ClickException(exc.message) from None
        try:
            async with engine.connect() as conn:
                return await spend_by(conn, group, where)
        finally:
            await engine.dispose()

    rows = asyncio.run(run())
    click.echo(spend_table(group, rows))


def spend_table(group: str, rows: list[SpendRow]) -> str:
    if not rows:
        return "no usage recorded"
    total = sum((row.cost for row in rows), start=rows[0].cost * 0)
    body = [
        [r.group, r.requests, r.prompt_tokens, r.completion_tokens, format_usd(r.cost)]
        for r in rows
    ]
    body.append(
        [
            "TOTAL",
            sum(r.requests for r in rows),
            sum(r.prompt_tokens for r in rows),
            sum(r.completion_tokens for r in rows),
            format_usd(total),
        ]
    )
    headers = [group, "requests", "prompt tokens", "completion tokens", "cost (USD)"]
    return render_table(headers, body)
