"""``tollhouse ledger verify``: reconcile the credit journal (``credits/verify.py``).

Exit status: 0 when everything holds, 1 when differences were found (each listed), 2
when the check could not run (configuration, database). It only reads, in one
snapshot, so it may run beside serving gateways, e.g. from cron.
"""

from __future__ import annotations

from dataclasses import asdict

import click

from tollhouse.cli.options import config_option
from tollhouse.cli.plumbing import print_json, run_engine
from tollhouse.cli.tables import render_table
from tollhouse.credits.verify import Report, verify_engine


class CannotCheck(click.ClickException):
    """The check did not run: exit status 2, apart from differences found (1)."""

    exit_code = 2


@click.group()
def ledger() -> None:
    """The credit journal: reconcile it with its projections, lots and the usage ledger."""


@ledger.command()
@config_option
@click.option("--account", "account_id", default=None, help="Only this credit account's id.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def verify(config_file: str | None, account_id: str | None, as_json: bool) -> None:
    """Check that the credit journal holds: every transaction two legs summing to zero;
    each account's funded and spent as the journal sums them; its posts exactly the
    usage records it paid for; its lots, debt and balance consistent.

    Reads only, in one snapshot. Not checked (a CLI cannot see them): a running
    server's counters (budgets, credit reservations), usage still buffered or spooled
    by a server, and Stripe's own records.

    Exit status: 0 everything holds; 1 differences (listed); 2 the check could not run.
    """
    report = run_engine(
        config_file,
        lambda engine: verify_engine(engine, account_id),
        migrate=False,  # it only reads: never changes the schema either
        failure=CannotCheck,
    )
    if account_id is not None and report.accounts == 0 and report.ok:
        raise CannotCheck(f"credit account {account_id!r} not found")
    if as_json:
        print_json(
            {
                "ok": report.ok,
                "accounts": report.accounts,
                "transactions": report.transactions,
                "posts": report.posts,
                "differences": [asdict(d) for d in report.differences],
            }
        )
    else:
        click.echo(report_text(report))
    if not report.ok:
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
