"""``tollhouse customers|teams|keys create|list|show|update|delete``.

The commands work on the configured database directly, through the same service
functions and body validation as the admin API; each write bumps the governance
version, so a running server picks it up within its poll interval. Spend is not shown
here (a server's live counters hold it): see ``tollhouse usage`` or the admin API.
"""

from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar

import click

from tollhouse.cli.options import config_option
from tollhouse.cli.plumbing import RATIO, USD, json_option
from tollhouse.cli.plumbing import body as _body
from tollhouse.cli.plumbing import print_json as _print_json
from tollhouse.cli.plumbing import run_db as _run
from tollhouse.cli.plumbing import show as _show
from tollhouse.cli.tables import render_table
from tollhouse.cli.views import (
    budget_text,
    customer_details,
    key_details,
    owner,
    rate_text,
    team_details,
)
from tollhouse.governance import service
from tollhouse.governance.answers import customer_read, key_read, team_read
from tollhouse.governance.schemas import (
    CustomerCreate,
    CustomerUpdate,
    TeamCreate,
    TeamUpdate,
    VirtualKeyCreate,
    VirtualKeyUpdate,
)

F = TypeVar("F", bound=Callable[..., Any])


# --- options --------------------------------------------------------------------------


def _names(text: str | None) -> list[str] | None:
    """``"a, b"`` → ``["a", "b"]``; ``""`` → ``[]`` (nothing allowed)."""
    if text is None:
        return None
    return [part.strip() for part in text.split(",") if part.strip()]


def _limit_options(func: F) -> F:
    """Budget and rate-limit options, shared by every create and update command."""
    options = [
        click.option("--budget", type=USD, default=None, help="Budget in USD per window."),
        click.option("--reset", default=None, help="Budget window: 30s 5m 1h 1d 1w 1M 1Y."),
        click.option(
            "--calendar/--rolling",
            "calendar_aligned",
            default=None,
            help="Align budget windows to the calendar (default: roll from creation).",
        ),
        click.option("--timezone", default=None, help="IANA zone of calendar windows."),
        click.option("--hard-limit-ratio", type=RATIO, default=None, help="e.g. 1.1 = 110 %."),
        click.option("--alerts", default=None, help="Alert thresholds, e.g. 0.5,0.8,1."),
        click.option("--request-limit", type=int, default=None, help="Requests per window."),
        click.option("--request-reset", default=None, help="Request window, e.g. 1m."),
        click.option("--token-limit", type=int, default=None, help="Tokens per window."),
        click.option("--token-reset", default=None, help="Token window, e.g. 1h."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _limits(options: dict[str, Any]) -> dict[str, Any]:
    """The ``budget``/``rate_limit`` parts of a body from the options that were given."""
    body: dict[str, Any] = {}
    budget = {
        name: options[option]
        for name, option in (
            ("max_limit", "budget"),
            ("reset_duration", "reset"),
            ("calendar_aligned", "calendar_aligned"),
            ("timezone", "timezone"),
            ("hard_limit_ratio", "hard_limit_ratio"),
        )
        if options.get(option) is not None
    }
    if options.get("alerts") is not None:
        try:
            budget["alert_thresholds"] = [Decimal(t) for t in _names(options["alerts"]) or []]
        except InvalidOperation:
            raise click.BadParameter(
                "thresholds are numbers, e.g. 0.5,0.8,1", param_hint="--alerts"
            ) from None
    if budget:
        body["budget"] = budget
    rate = {
        name: options[option]
        for name, option in (
            ("request_max_limit", "request_limit"),
            ("request_reset_duration", "request_reset"),
            ("token_max_limit", "token_limit"),
            ("token_reset_duration", "token_reset"),
        )
        if options.get(option) is not None
    }
    if rate:
        body["rate_limit"] = rate
    if options.get("no_budget"):
        body["budget"] = None
    if options.get("no_rate_limit"):
        body["rate_limit"] = None
    return body


def _removals(func: F) -> F:
    func = click.option("--no-rate-limit", is_flag=True, help="Remove the rate limit.")(func)
    return click.option("--no-budget", is_flag=True, help="Remove the budget.")(func)


@click.group()
def customers() -> None:
    """Customers: the top of the hierarchy; teams and keys may belong to one."""


@customers.command("create")
@config_option
@click.argument("name")
@_limit_options
@json_option
def create_customer(config_file: str | None, name: str, as_json: bool, **limits: Any) -> None:
    """Create a customer, optionally with a budget (--budget 10 --reset 1M) and limits."""
    body = _body(CustomerCreate, {"name": name, **_limits(limits)})
    view = _run(config_file, lambda conn: service.create_customer(conn, body), write=True)
    _show(as_json, customer_read(view, None), customer_details(view))


@customers.command("list")
@config_option
@json_option
def list_customers(config_file: str | None, as_json: bool) -> None:
    """Every customer with its budget, rate limit and number of teams."""
    views = _run(config_file, service.list_customers)
    if as_json or not views:
        _show(as_json, [customer_read(v, None) for v in views], "no customers")
        return
    rows = [
        [v.customer.id, v.customer.name, budget_text(v.budget), rate_text(v.rate_limit),
         len(v.teams)]
        for v in views
    ]  # fmt: skip
    click.echo(render_table(["id", "name", "budget", "rate limit", "teams"], rows))


@customers.command("show")
@config_option
@click.argument("customer_id")
@json_option
def show_customer(config_file: str | None, customer_id: str, as_json: bool) -> None:
    """One customer."""
    view = _run(config_file, lambda conn: service.get_customer(conn, customer_id))
    _show(as_json, customer_read(view, None), customer_details(view))


@customers.command("update")
@config_option
@click.argument("customer_id")
@click.option("--name", default=None, help="New name.")
@_limit_options
@_removals
@json_option
def update_customer(
    config_file: str | None, customer_id: str, name: str | None, as_json: bool, **limits: Any
) -> None:
    """Change what is given; budget and rate-limit options merge into the existing ones."""
    data = {"name": name} if name is not None else {}
    body = _body(CustomerUpdate, {**data, **_limits(limits)})
    view = _run(
        config_file, lambda conn: service.update_customer(conn, customer_id, body), write=True
    )
    _show(as_json, customer_read(view, None), customer_details(view))


@customers.command("delete")
@config_option
@click.argument("customer_id")
def delete_customer(config_file: str | None, customer_id: str) -> None:
    """Delete a customer (its teams and keys stay, detached)."""
    _run(config_file, lambda conn: service.delete_customer(conn, customer_id), write=True)
    click.echo(f"deleted customer {customer_id}")


# --- teams ----------------------------------------------------------------------------


@click.group()
def teams() -> None:
    """Teams: optionally under a customer; keys may belong to one."""


@teams.command("create")
@config_option
@click.argument("name")
@click.option("--customer", "customer_id", default=None, help="The customer's id.")
@_limit_options
@json_option
def create_team(
    config_file: str | None, name: str, customer_id: str | None, as_json: bool, **limits: Any
) -> None:
    """Create a team, optionally under a customer, with a budget and limits."""
    body = _body(TeamCreate, {"name": name, "customer_id": customer_id, **_limits(limits)})
    view = _run(config_file, lambda conn: service.create_team(conn, body), write=True)
    _show(as_json, team_read(view, None), team_details(view))


@teams.command("list")
@config_option
@click.option("--customer", "customer_id", default=None, help="Only this customer's teams.")
@json_option
def list_teams(config_file: str | None, customer_id: str | None, as_json: bool) -> None:
    """Every team (or one customer's)."""
    views = _run(config_file, lambda conn: service.list_teams(conn, customer_id=customer_id))
    if as_json or not views:
        _show(as_json, [team_read(v, None) for v in views], "no teams")
        return
    rows = [
        [v.team.id, v.team.name, v.customer.name if v.customer else "-",
         budget_text(v.budget), rate_text(v.rate_limit)]
        for v in views
    ]  # fmt: skip
    click.echo(render_table(["id", "name", "customer", "budget", "rate limit"], rows))


@teams.command("show")
@config_option
@click.argument("team_id")
@json_option
def show_team(config_file: str | None, team_id: str, as_json: bool) -> None:
    """One team."""
    view = _run(config_file, lambda conn: service.get_team(conn, team_id))
    _show(as_json, team_read(view, None), team_details(view))


@teams.command("update")
@config_option
@click.argument("team_id")
@click.option("--name", default=None, help="New name.")
@click.option("--customer", "customer_id", default=None, help="Move under this customer.")
@click.option("--no-customer", is_flag=True, help="Detach from its customer.")
@_limit_options
@_removals
@json_option
def update_team(
    config_file: str | None,
    team_id: str,
    name: str | None,
    customer_id: str | None,
    no_customer: bool,
    as_json: bool,
    **limits: Any,
) -> None:
    """Change what is given; budget and rate-limit options merge into the existing ones."""
    data: dict[str, Any] = {"name": name} if name is not None else {}
    if customer_id is not None or no_customer:
        data["customer_id"] = None if no_customer else customer_id
    body = _body(TeamUpdate, {**data, **_limits(limits)})
    view = _run(config_file, lambda conn: service.update_team(conn, team_id, body), write=True)
    _show(as_json, team_read(view, None), team_details(view))


@teams.command("delete")
@config_option
@click.argument("team_id")
def delete_team(config_file: str | None, team_id: str) -> None:
    """Delete a team (its keys stay, detached)."""
    _run(config_file, lambda conn: service.delete_team(conn, team_id), write=True)
    click.echo(f"deleted team {team_id}")


# --- keys -----------------------------------------------------------------------------


def _key_options(func: F) -> F:
    options = [
        click.option("--description", default=None, help="Free text."),
        click.option("--models", default=None, help="Allowed models, e.g. gpt-4o,claude-3."),
        click.option("--providers", default=None, help="Allowed providers, e.g. openai."),
        click.option("--max-parallel", type=int, default=None, help="Concurrent requests."),
        click.option("--expires", default=None, help="Expiry, RFC 3339 (e.g. 2027-01-01)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _key_fields(options: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = {}
    for name, option in (("description", "description"), ("expires_at", "expires"),
                         ("max_parallel_requests", "max_parallel")):  # fmt: skip
        if options.get(option) is not None:
            data[name] = options.pop(option)
    for name, option in (("allowed_models", "models"), ("allowed_providers", "providers")):
        if options.get(option) is not None:
            data[name] = _names(options.pop(option))
    return data


@click.group()
def keys() -> None:
    """Virtual keys: what applications send; each may carry limits and allow-lists."""


@keys.command("create")
@config_option
@click.argument("name")
@click.option("--team", "team_id", default=None, help="The team's id.")
@click.option("--customer", "customer_id", default=None, help="The customer's id.")
@click.option("--inactive", is_flag=True, help="Create it switched off.")
@_key_options
@_limit_options
@json_option
def create_key(
    config_file: str | None,
    name: str,
    team_id: str | None,
    customer_id: str | None,
    inactive: bool,
    as_json: bool,
    **options: Any,
) -> None:
    """Create a key; its value is printed once and cannot be shown again."""
    data = {"name": name, "team_id": team_id, "customer_id": customer_id, "is_active": not inactive}
    body = _body(VirtualKeyCreate, {**data, **_key_fields(options), **_limits(options)})
    view = _run(config_file, lambda conn: service.create_key(conn, body), write=True)
    if as_json:
        _print_json(key_read(view, None))
        return
    click.echo(key_details(view))
    click.echo(
        "\nThe key (shown only now; Tollhouse keeps only its hash, so store it safely):\n\n"
        f"    {view.value}\n"
    )


@keys.command("list")
@config_option
@click.option("--team", "team_id", default=None, help="Only this team's keys.")
@click.option("--customer", "customer_id", default=None, help="Only this customer's keys.")
@json_option
def list_keys(
    config_file: str | None, team_id: str | None, customer_id: str | None, as_json: bool
) -> None:
    """Every key (or one team's or customer's), by hint, never by value."""
    views = _run(
        config_file,
        lambda conn: service.list_keys(conn, team_id=team_id, customer_id=customer_id),
    )
    if as_json or not views:
        _show(as_json, [key_read(v, None) for v in views], "no keys")
        return
    rows = [
        [v.key.id, v.key.name, v.key.key_hint, "yes" if v.key.is_active else "no",
         owner(v) or "-", budget_text(v.budget), rate_text(v.rate_limit)]
        for v in views
    ]  # fmt: skip
    headers = ["id", "name", "key", "active", "belongs to", "budget", "rate limit"]
    click.echo(render_table(headers, rows))


@keys.command("show")
@config_option
@click.argument("key_id")
@json_option
def show_key(config_file: str | None, key_id: str, as_json: bool) -> None:
    """One key (its hint; the value was shown once, at creation)."""
    view = _run(config_file, lambda conn: service.get_key(conn, key_id))
    _show(as_json, key_read(view, None), key_details(view))


@keys.command("update")
@config_option
@click.argument("key_id")
@click.option("--name", default=None, help="New name.")
@click.option("--team", "team_id", default=None, help="Move to this team (leaves its customer).")
@click.option("--customer", "customer_id", default=None, help="Move to this customer.")
@click.option("--detach", is_flag=True, help="Belong to no team or customer.")
@click.option("--active/--inactive", "is_active", default=None, help="Switch on or off.")
@click.option("--all-models", is_flag=True, help="Allow every model again.")
@click.option("--all-providers", is_flag=True, help="Allow every provider again.")
@click.option("--no-max-parallel", is_flag=True, help="No concurrency limit.")
@click.option("--no-expiry", is_flag=True, help="Never expire.")
@_key_options
@_limit_options
@_removals
@json_option
def update_key(
    config_file: str | None,
    key_id: str,
    name: str | None,
    team_id: str | None,
    customer_id: str | None,
    detach: bool,
    is_active: bool | None,
    all_models: bool,
    all_providers: bool,
    no_max_parallel: bool,
    no_expiry: bool,
    as_json: bool,
    **options: Any,
) -> None:
    """Change what is given; budget and rate-limit options merge into the existing ones."""
    data: dict[str, Any] = {}
    for field, value in (("name", name), ("team_id", team_id), ("customer_id", customer_id),
                         ("is_active", is_active)):  # fmt: skip
        if value is not None:
            data[field] = value
    cleared = {
        "allowed_models": all_models,
        "allowed_providers": all_providers,
        "max_parallel_requests": no_max_parallel,
        "expires_at": no_expiry,
    }
    for field, flag in cleared.items():
        if flag:
            data[field] = None
    if detach:
        data.update(team_id=None, customer_id=None)
    body = _body(VirtualKeyUpdate, {**data, **_key_fields(options), **_limits(options)})
    view = _run(config_file, lambda conn: service.update_key(conn, key_id, body), write=True)
    _show(as_json, key_read(view, None), key_details(view))


@keys.command("delete")
@config_option
@click.argument("key_id")
def delete_key(config_file: str | None, key_id: str) -> None:
    """Delete a key; requests with it are refused from then on."""
    _run(config_file, lambda conn: service.delete_key(conn, key_id), write=True)
    click.echo(f"deleted key {key_id}")
