"""``tollhouse policies list|show|create|update|delete|test|impact|decisions``: policies
from the shell (docs/policies.md).

On the configured database directly, through the policies service and the admin API's
body models, so a policy is checked exactly as ``POST /api/policies`` checks it (its
condition compiled: an invalid one is refused naming the error). Every write bumps the
governance version: running servers apply it within their poll interval.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tollhouse.cli.options import config_option, settings_from
from tollhouse.cli.plumbing import body, json_option, run_engine, show
from tollhouse.cli.tables import render_table
from tollhouse.policies import service, trial
from tollhouse.policies.engines import PolicyEngine
from tollhouse.policies.schemas import (
    DecisionPage,
    DecisionRead,
    ImpactRead,
    PolicyCreate,
    PolicyList,
    PolicyRead,
    PolicyUpdate,
    TestResult,
)
from tollhouse.policies.setup import opa_session, policy_engines

T = TypeVar("T")


def _run(
    config_file: str | None,
    action: Callable[[AsyncConnection, dict[str, PolicyEngine], dict[str, str]], Awaitable[T]],
    *,
    write: bool = False,
) -> T:
    """``action`` on one connection (a transaction when ``write``), with the engines a
    server would have (OPA's over a session of its own)."""
    settings = settings_from(config_file)
    regions = {name: cfg.region for name, cfg in settings.providers.items()}

    async def on(engine: AsyncEngine) -> T:
        async with contextlib.AsyncExitStack() as stack:
            session = opa_session(settings)
            if session is not None:
                stack.push_async_callback(session.close)
            engines = policy_engines(settings, session)
            async with _connection(engine, write) as conn:
                return await action(conn, engines, regions)
        raise AssertionError("unreachable")  # pragma: no cover

    return run_engine(config_file, on)


@contextlib.asynccontextmanager
async def _connection(engine: AsyncEngine, write: bool) -> AsyncIterator[AsyncConnection]:
    if write:
        async with engine.begin() as conn:
            yield conn
    else:
        async with engine.connect() as conn:
            yield conn


def _read_json(source: str) -> dict[str, Any]:
    """A JSON object from a file path, ``-`` (stdin), or the text itself."""
    text: str = source if source != "-" else sys.stdin.read()
    if source != "-" and not source.lstrip().startswith("{"):
        path = Path(source)
        if not path.is_file():
            raise click.UsageError(f"{source}: not a file, nor a JSON object")
        text = path.read_text()
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise click.UsageError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise click.UsageError("a JSON object is expected")
    return data


def _details(policy: PolicyRead) -> str:
    where = ", ".join(
        a.type if a.type == "global" else f"{a.type} {a.id or a.tag}" for a in policy.attachments
    )
    rows: list[list[object]] = [
        ["id", policy.id],
        ["name", policy.name],
        ["action", policy.action],
        ["effect", policy.effect],
        ["engine", policy.engine],
        ["condition", policy.condition or "(always)"],
        ["priority", policy.priority],
        ["attached to", where],
        ["enabled", "yes" if policy.enabled else "no"],
        ["fail mode", policy.fail_mode],
    ]
    return render_table(["field", "value"], rows)


@click.group()
def policies() -> None:
    """Allow/deny policies on requests, tool calls and sandbox leases.

    Works on the configured database directly; running servers apply a change within
    their governance poll interval. Bodies are the admin API's (docs/policies.md).
    """


@policies.command("list")
@config_option
@click.option("--action", default=None, help="Only policies of this action (or *).")
@json_option
def list_policies(config_file: str | None, action: str | None, as_json: bool) -> None:
    """Every policy, highest priority first."""
    rows = _run(config_file, lambda conn, _e, _r: service.list_policies(conn, action))
    items = [PolicyRead.from_row(row) for row in rows]
    if as_json:
        show(True, PolicyList(policies=items, count=len(items)), "")
        return
    if not items:
        click.echo("no policies")
        return
    table = [
        [p.name, p.action, p.effect, p.engine, p.priority, "yes" if p.enabled else "no", p.id]
        for p in items
    ]
    headers = ["name", "action", "effect", "engine", "priority", "enabled", "id"]
    click.echo(render_table(headers, table))


@policies.command("show")
@config_option
@click.argument("policy_id")
@json_option
def show_policy(config_file: str | None, policy_id: str, as_json: bool) -> None:
    """One policy."""
    row = _run(config_file, lambda conn, _e, _r: service.get_policy(conn, policy_id))
    policy = PolicyRead.from_row(row)
    show(as_json, policy, _details(policy))


@policies.command("create")
@config_option
@click.argument("source")
@json_option
def create_policy(config_file: str | None, source: str, as_json: bool) -> None:
    """Create a policy from SOURCE: a JSON body (a file, '-' for stdin, or the text)."""
    policy = body(PolicyCreate, _read_json(source))
    row = _run(
        config_file,
        lambda conn, engines, _r: service.create_policy(conn, policy, engines),
        write=True,
    )
    made = PolicyRead.from_row(row)
    show(as_json, made, _details(made))


@policies.command("update")
@config_option
@click.argument("policy_id")
@click.argument("source")
@json_option
def update_policy(config_file: str | None, policy_id: str, source: str, as_json: bool) -> None:
    """Merge SOURCE (a JSON body, as for create) into the policy."""
    changes = body(PolicyUpdate, _read_json(source))
    row = _run(
        config_file,
        lambda conn, engines, _r: service.update_policy(conn, policy_id, changes, engines),
        write=True,
    )
    updated = PolicyRead.from_row(row)
    show(as_json, updated, _details(updated))


@policies.command("delete")
@config_option
@click.argument("policy_id")
def delete_policy(config_file: str | None, policy_id: str) -> None:
    """Delete a policy."""
    _run(config_file, lambda conn, _e, _r: service.delete_policy(conn, policy_id), write=True)
    click.echo(f"deleted {policy_id}")


@policies.command("test")
@config_option
@click.argument("policy_id")
@click.option("--input", "given", default="{}", help="The input: JSON, a file, or '-'.")
@click.option("--key-id", default=None, help="Take the principal from this virtual key.")
@json_option
def test_policy(
    config_file: str | None, policy_id: str, given: str, key_id: str | None, as_json: bool
) -> None:
    """Dry run: what the policy alone does with an input (laid over an empty document)."""
    data = _read_json(given)

    async def run(conn: AsyncConnection, engines: dict[str, PolicyEngine], _r: Any) -> Any:
        row = await service.get_policy(conn, policy_id)
        return await trial.dry_run(conn, row, data, key_id, engines)

    result = TestResult.model_validate(_run(config_file, run))
    matched = "undefined" if result.matched is None else str(result.matched).lower()
    text = f"matched: {matched}\noutcome: {result.outcome}"
    if result.error:
        text += f"\nerror: {result.error}"
    show(as_json, result, text)


@policies.command("impact")
@config_option
@click.argument("policy_id")
@click.option("--limit", type=click.IntRange(1, 10_000), default=1000, show_default=True)
@json_option
def impact(config_file: str | None, policy_id: str, limit: int, as_json: bool) -> None:
    """How many of the latest requests the policy alone would have denied."""

    async def run(conn: AsyncConnection, engines: dict[str, PolicyEngine], regions: Any) -> Any:
        row = await service.get_policy(conn, policy_id)
        return await trial.impact(conn, row, limit, engines, regions)

    found = ImpactRead.model_validate(_run(config_file, run))
    text = (
        f"would have denied {found.would_deny} of the last {found.evaluated} requests"
        f" (matched {found.matched}, errors {found.errors})"
    )
    if found.examples:
        text += "\nfor example: " + ", ".join(found.examples)
    show(as_json, found, text)


@policies.command("decisions")
@config_option
@click.option("--policy-id", default=None, help="Only decisions this policy made.")
@click.option("--decision", type=click.Choice(["allow", "deny"]), default=None)
@click.option("--limit", type=click.IntRange(1, 1000), default=50, show_default=True)
@json_option
def decisions(
    config_file: str | None, policy_id: str | None, decision: str | None, limit: int, as_json: bool
) -> None:
    """The decision log, newest first: denials, errors (and allows if logged)."""

    async def run(conn: AsyncConnection, _e: Any, _r: Any) -> Any:
        return await service.list_decisions(
            conn, policy_id=policy_id, decision=decision, limit=limit, cursor=None
        )

    rows, cursor = _run(config_file, run)
    items = [DecisionRead.model_validate(dict(row._mapping)) for row in rows]
    if as_json:
        show(True, DecisionPage(decisions=items, count=len(items), next_cursor=cursor), "")
        return
    if not items:
        click.echo("no decisions logged")
        return
    table = [
        [d.created_at.isoformat(), d.decision, d.policy_name or "-", d.reason, d.id] for d in items
    ]
    click.echo(render_table(["at", "decision", "policy", "reason", "id"], table))
