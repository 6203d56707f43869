"""``tollhouse ledger verify``: reconcile the credit journal (``credits/verify.py``) and the
usage roll-ups (``ledger/verify.py``) with the usage ledger; ``tollhouse ledger
rebuild-rollups``: recompute the roll-ups from it.

``verify``'s exit status: 0 when everything holds, 1 when differences were found (each
listed), 2 when the check could not run (configuration, database). It only reads, in one
snapshot, so it may run beside serving gateways, e.g. from cron.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any

import click
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tollhouse.cli.options import config_option
from tollhouse.cli.plumbing import json_option, print_json, run_db, run_engine, show
from tollhouse.cli.tables import render_table
from tollhouse.credits.verify import Report, verify
from tollhouse.db.snapshot import read_snapshot
from tollhouse.errors import ValidationFailed
from tollhouse.ledger import verify as rollup_check
from tollhouse.ledger.rollups import Grain, floor
from tollhouse.web.query import time_param


class CannotCheck(click.ClickException):
    """The check did not run: exit status 2, apart from differences found (1)."""

    exit_code = 2


@click.group()
def ledger() -> None:
    """The usage ledger: reconcile the credit journal and the roll-ups with it, rebuild
    the roll-ups."""


@ledger.command("verify")
@config_option
@click.option("--account", "account_id", default=None, help="Only this credit account's id.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def verify_command(config_file: str | None, account_id: str | None, as_json: bool) -> None:
    """Check that the credit journal holds: every transaction two legs summing to zero;
    each account's funded and spent as the journal sums them; its posts exactly the
    usage records it paid for; its lots, debt and balance consistent. And that the
    hourly and daily roll-ups are the ledger's records summed, row for row (not with
    --account).

    Reads only, in one snapshot. Not checked (a CLI cannot see them): a running
    server's counters (budgets, credit reservations), usage still buffered or spooled
    by a server, and Stripe's own records.

    Exit status: 0 everything holds; 1 differences (listed); 2 the check could not run.
    """

    async def check(engine: AsyncEngine) -> tuple[Report, rollup_check.Report | None]:
        async with read_snapshot(engine) as conn:
            credit = await verify(conn, account_id)
            summed = None if account_id is not None else await rollup_check.verify_rollups(conn)
        return credit, summed

    report, summed = run_engine(
        config_file,
        check,
        migrate=False,  # it only reads: never changes the schema either
        failure=CannotCheck,
    )
    if account_id is not None and report.accounts == 0 and report.ok:
        raise CannotCheck(f"credit account {account_id!r} not found")
    ok = report.ok and (summed is None or summed.ok)
    if as_json:
        print_json(
            {
                "ok": ok,
                "accounts": report.accounts,
                "transactions": report.transactions,
                "posts": report.posts,
                "differences": [asdict(d) for d in report.differences],
                "rollups": None if summed is None else rollups_json(summed),
            }
        )
    else:
        texts = [report_text(report)] + ([] if summed is None else [rollups_text(summed)])
        click.echo("\n\n".join(texts))
    if not ok:
        click.get_current_context().exit(1)


def report_text(report: Report) -> str:
    checked = (
        f"{report.accounts} account(s), {report.transactions} transaction(s), "
        f"{report.posts} post(s)"
    )
    if report.ok:
        return f"The credit ledger holds: {checked} checked, no difference."
    rows = [[d.account_id, d.check, d.expected, d.found, d.detail] for d in report.differences]
    accounts = len({d.account_id for d in report.differences})
    table = render_table(["account", "check", "expected", "found", "detail"], rows)
    return f"{table}\n\n{len(rows)} difference(s) in {accounts} account(s); {checked} checked."


def rollups_json(report: rollup_check.Report) -> dict[str, Any]:
    return {
        "ok": report.ok,
        "rows": report.rows,
        "more": report.more,
        "differences": [asdict(d) for d in report.differences],
    }


def rollups_text(report: rollup_check.Report) -> str:
    checked = " and ".join(f"{n} {name} row(s)" for name, n in report.rows.items())
    if report.ok:
        return f"The roll-ups hold: {checked} equal the ledger's sums, no difference."
    rows = [
        [d.table, d.bucket.isoformat(), d.group, d.check, d.expected, d.found]
        for d in report.differences
    ]
    table = render_table(["table", "bucket", "group", "check", "expected", "found"], rows)
    more = ", and more not listed" if report.more else ""
    return (
        f"{table}\n\n{len(rows)} difference(s) in the roll-ups{more}; {checked} checked. "
        "`tollhouse ledger rebuild-rollups` recomputes them from the ledger."
    )


@ledger.command("rebuild-rollups")
@config_option
@click.option(
    "--since",
    default=None,
    help="From the UTC day of this date or time on (default: the whole ledger).",
)
@json_option
def rebuild_rollups(config_file: str | None, since: str | None, as_json: bool) -> None:
    """Recompute the hourly and daily roll-ups from the usage ledger: delete them (from
    --since's day on) and sum the records again, in one transaction. For repairs after
    a manual change to usage_records, or what `tollhouse ledger verify` found.

    Safe beside serving gateways: their ledger writes wait for it to commit."""
    try:
        moment = time_param(since, "since")
    except ValidationFailed as exc:
        raise click.BadParameter(exc.message, param_hint="--since") from None
    start = None if moment is None else floor(moment, "day")

    async def rebuild(conn: AsyncConnection) -> dict[Grain, int]:
        return await rollup_check.rebuild(conn, start)

    written = run_db(config_file, rebuild, write=True)
    show(
        as_json,
        {"since": start, "hourly_rows": written["hour"], "daily_rows": written["day"]},
        rebuilt_text(start, written),
    )


def rebuilt_text(start: datetime | None, written: dict[Grain, int]) -> str:
    scope = "the whole ledger" if start is None else f"{start.date().isoformat()} (UTC) on"
    return (
        f"Rebuilt the roll-ups from {scope}: "
        f"{written['hour']} hourly and {written['day']} daily row(s) written."
    )
