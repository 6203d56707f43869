"""``tollhouse credits accounts|grant|balance|journal``: prepaid accounts from the shell.

Like ``tollhouse customers``: the configured database directly, through the credits
service functions and the admin API's body models (amounts exact, never through a
float). Writes that change what admission may spend (a grant, the overdraft limit, a
new account) bump the governance version, so running servers pick them up within their
poll interval (``governance_poll_interval_s``). Balances here are the journal's
projections (``funded − spent``): no server's live meter, so neither what requests in
flight hold nor usage a server has not written yet (the admin API shows those).
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any, get_args

import click
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from starlette.datastructures import QueryParams

from tollhouse.cli.options import config_option
from tollhouse.cli.plumbing import USD, body, json_option, run_db, run_engine, show
from tollhouse.cli.tables import render_table
from tollhouse.credits import service, statement
from tollhouse.credits.answers import account_read, entry_read, grant_read
from tollhouse.credits.schemas import (
    AccountCreate,
    AccountList,
    AccountUpdate,
    Category,
    EntryRead,
    GrantCreate,
    GrantWritten,
    LedgerPage,
    LedgerQuery,
    OwnerType,
)
from tollhouse.errors import NotFound, TollhouseError
from tollhouse.money import format_usd
from tollhouse.web.responses import rfc3339

OWNER_TYPES: tuple[str, ...] = get_args(OwnerType)
_MAX_IDEMPOTENCY_KEY = 255
JOURNAL_NOTE = (
    "Balances are the journal's (funded − spent); a running server's live figure also "
    "counts requests in flight and usage not yet written."
)


async def _account(conn: AsyncConnection, ref: str) -> Any:
    """The account ``ref`` names: its id, or ``<owner type>:<owner id>``."""
    owner_type, colon, owner_id = ref.partition(":")
    if colon and owner_type in OWNER_TYPES:
        rows = await service.list_accounts(conn, owner_type, owner_id)
        if not rows:
            raise NotFound(f"{owner_type} {owner_id!r} has no credit account")
        return rows[0]
    return await service.get_account(conn, ref)


def _usd(amount: Decimal | None) -> str:
    return "-" if amount is None else f"{format_usd(amount)} USD"


def _details(rows: Sequence[tuple[str, object]]) -> str:
    return render_table(["field", "value"], [[name, "-" if v is None else v] for name, v in rows])


def _auto_topup(row: Any) -> str:
    if not row.auto_topup_enabled:
        reason = row.auto_topup_disabled_reason
        return f"off ({reason})" if reason else "off"
    text = f"add {_usd(row.auto_topup_amount)} below {_usd(row.auto_topup_threshold)}"
    if row.auto_topup_monthly_cap is not None:
        text += f", at most {_usd(row.auto_topup_monthly_cap)} a month"
    return text


def account_details(row: Any) -> str:
    balance = service.balance_of(row, None)
    return _details(
        [
            ("id", row.id),
            ("owner", f"{row.owner_type} {row.owner_id}"),
            ("total", _usd(balance.total)),
            ("funded", _usd(row.funded)),
            ("spent", _usd(row.spent)),
            ("overdraft limit", _usd(row.overdraft_limit)),
            ("low balance", _usd(row.low_balance)),
            ("alert state", row.alert_state),
            ("auto top-up", _auto_topup(row)),
            ("created", rfc3339(row.created_at)),
            ("updated", rfc3339(row.updated_at)),
        ]
    )


@click.group()
def credits() -> None:
    """Prepaid credit accounts: open them, grant credit, read balances and the journal.

    Works on the configured database directly; a running server picks up what changes
    admission (grants, overdraft limits, new accounts) within its governance poll
    interval. Balances are the journal's projections, not a server's live meter.
    """


@credits.group()
def accounts() -> None:
    """Prepaid accounts (one per customer, team or virtual key at most)."""


@accounts.command("list")
@config_option
@click.option("--owner-type", type=click.Choice(OWNER_TYPES), default=None)
@click.option("--owner-id", default=None, help="Only the account of this owner.")
@json_option
def list_accounts(
    config_file: str | None, owner_type: str | None, owner_id: str | None, as_json: bool
) -> None:
    """Every account (or one owner's), oldest first, with its journal balance."""
    rows = run_db(config_file, lambda conn: service.list_accounts(conn, owner_type, owner_id))
    if as_json:
        items = [account_read(row, None) for row in rows]
        show(True, AccountList(accounts=items, count=len(items)), "")
        return
    if not rows:
        click.echo("no credit accounts")
        return
    table = [
        [r.id, f"{r.owner_type} {r.owner_id}", format_usd(r.funded - r.spent),
         format_usd(r.overdraft_limit), r.alert_state]
        for r in rows
    ]  # fmt: skip
    headers = ["id", "owner", "total (USD)", "overdraft (USD)", "alert"]
    click.echo(render_table(headers, table))


@accounts.command("create")
@config_option
@click.argument("owner_type", type=click.Choice(OWNER_TYPES))
@click.argument("owner_id")
@click.option("--overdraft-limit", type=USD, default=None, help="USD it may go below 0.")
@click.option("--low-balance", type=USD, default=None, help="Alert (credit_low) below this.")
@json_option
def create_account(
    config_file: str | None,
    owner_type: str,
    owner_id: str,
    overdraft_limit: Decimal | None,
    low_balance: Decimal | None,
    as_json: bool,
) -> None:
    """Open a prepaid account for a customer, team or virtual key (its id)."""
    data: dict[str, Any] = {"owner_type": owner_type, "owner_id": owner_id}
    if overdraft_limit is not None:
        data["overdraft_limit"] = overdraft_limit
    if low_balance is not None:
        data["low_balance"] = low_balance
    account = body(AccountCreate, data)
    row = run_db(config_file, lambda conn: service.create_account(conn, account), write=True)
    show(as_json, account_read(row, None), account_details(row))


@accounts.command("show")
@config_option
@click.argument("account")
@json_option
def show_account(config_file: str | None, account: str, as_json: bool) -> None:
    """One account, with its journal balance. ACCOUNT: an id or OWNER_TYPE:OWNER_ID."""
    row = run_db(config_file, lambda conn: _account(conn, account))
    show(as_json, account_read(row, None), f"{account_details(row)}\n\n{JOURNAL_NOTE}")


@accounts.command("update")
@config_option
@click.argument("account")
@click.option("--overdraft-limit", type=USD, default=None, help="USD it may go below 0.")
@click.option("--low-balance", type=USD, default=None, help="Alert (credit_low) below this.")
@click.option("--no-low-balance", is_flag=True, help="No low-balance alert.")
@json_option
def update_account(
    config_file: str | None,
    account: str,
    overdraft_limit: Decimal | None,
    low_balance: Decimal | None,
    no_low_balance: bool,
    as_json: bool,
) -> None:
    """Change what is given. ACCOUNT: an id or OWNER_TYPE:OWNER_ID."""
    data: dict[str, Any] = {}
    if overdraft_limit is not None:
        data["overdraft_limit"] = overdraft_limit
    if low_balance is not None or no_low_balance:
        if low_balance is not None and no_low_balance:
            raise click.UsageError("--low-balance and --no-low-balance contradict each other")
        data["low_balance"] = low_balance
    changes = body(AccountUpdate, data)

    async def update(conn: AsyncConnection) -> Any:
        row = await _account(conn, account)
        return await service.update_account(conn, row.id, changes)

    row = run_db(config_file, update, write=True)
    show(as_json, account_read(row, None), account_details(row))


# --- grants, balance, journal -------------------------------------------------------------


def _idempotency_key(value: str | None) -> str | None:
    if value is None:
        return None
    if not value.strip() or len(value) > _MAX_IDEMPOTENCY_KEY or not value.isprintable():
        raise click.BadParameter(
            f"1 to {_MAX_IDEMPOTENCY_KEY} printable characters", param_hint="--idempotency-key"
        )
    return value


@credits.command(context_settings={"ignore_unknown_options": True})
@config_option
@click.argument("account")
@click.argument("amount", type=USD)
@click.option(
    "--category",
    type=click.Choice(get_args(Category)),
    default="promotional",
    show_default=True,
    help="Negative amounts only as an adjustment.",
)
@click.option("--priority", type=int, default=None, help="Lower is drawn first (default 10).")
@click.option("--effective-at", default=None, help="Booked then (RFC 3339); default now.")
@click.option("--expires-at", default=None, help="What is left lapses then (RFC 3339).")
@click.option("--memo", default=None, help="Free text, shown in the journal.")
@click.option("--idempotency-key", default=None, help="The same key grants once.")
@json_option
def grant(
    config_file: str | None,
    account: str,
    amount: Decimal,
    category: str,
    priority: int | None,
    effective_at: str | None,
    expires_at: str | None,
    memo: str | None,
    idempotency_key: str | None,
    as_json: bool,
) -> None:
    """Grant AMOUNT USD of credit (negative: an adjustment taking credit away).

    ACCOUNT is an account id or OWNER_TYPE:OWNER_ID. A grant effective later is booked
    when it takes effect (by a running server's sweeper). Running servers see the new
    funding within their governance poll interval.
    """
    data: dict[str, Any] = {"amount": amount, "category": category}
    for name, value in (
        ("priority", priority),
        ("effective_at", effective_at),
        ("expires_at", expires_at),
        ("memo", memo),
    ):
        if value is not None:
            data[name] = value
    given = body(GrantCreate, data)
    key = _idempotency_key(idempotency_key)

    async def write(conn: AsyncConnection) -> tuple[Any, bool]:
        row = await _account(conn, account)
        return await service.grant(conn, row.id, given, key)

    lot, new = run_db(config_file, write, write=True)
    read = grant_read(lot)
    if as_json:
        message = "Grant created successfully" if new else "Grant already created with this key"
        show(True, GrantWritten(message=message, grant=read), "")
        return
    click.echo(
        _details(
            [
                ("id", read.id),
                ("account", read.account_id),
                ("category", read.category),
                ("amount", _usd(read.amount)),
                ("remaining", _usd(read.remaining)),
                ("priority", read.priority),
                ("status", read.status),
                ("effective", rfc3339(read.effective_at)),
                ("expires", rfc3339(read.expires_at)),
                ("memo", read.memo),
            ]
        )
    )
    if not new:
        click.echo("\n(already granted with this idempotency key: nothing new was booked)")


@credits.command()
@config_option
@click.argument("account")
@json_option
def balance(config_file: str | None, account: str, as_json: bool) -> None:
    """The account's balance from the journal (funded − spent), and what it may spend.

    ACCOUNT is an account id or OWNER_TYPE:OWNER_ID. No live meter: requests in flight
    and usage a server has not written yet are not in it.
    """
    row = run_db(config_file, lambda conn: _account(conn, account))
    total = service.balance_of(row, None).total
    data = {
        "account_id": row.id,
        "funded": row.funded,
        "spent": row.spent,
        "total": total,
        "overdraft_limit": row.overdraft_limit,
        "spendable": total + row.overdraft_limit,
        "source": "journal",
    }
    text = _details(
        [
            ("account", row.id),
            ("funded", _usd(row.funded)),
            ("spent", _usd(row.spent)),
            ("total", _usd(total)),
            ("overdraft limit", _usd(row.overdraft_limit)),
            ("spendable", _usd(total + row.overdraft_limit)),
        ]
    )
    show(as_json, data, f"{text}\n\n{JOURNAL_NOTE}")


def _journal_query(limit: int, cursor: str | None, as_of: str | None) -> LedgerQuery:
    params = {"limit": str(limit)}
    params.update({k: v for k, v in (("cursor", cursor), ("as_of", as_of)) if v is not None})
    try:
        query = LedgerQuery.parse(QueryParams(params))
        statement.cursor_value(query.cursor)
        return query
    except TollhouseError as exc:
        raise click.UsageError(exc.message) from None


def _what(entry: EntryRead) -> str:
    parts = [entry.category, entry.request_id, entry.payment_intent, entry.memo]
    return " ".join(part for part in parts if part)


@credits.command()
@config_option
@click.argument("account")
@click.option("--limit", type=int, default=100, show_default=True, help="Movements (1-1000).")
@click.option("--cursor", default=None, help="The next page (printed under the last one).")
@click.option("--as-of", default=None, help="Only movements booked before this time.")
@click.option("--csv", "as_csv", is_flag=True, help="The whole statement as CSV, oldest first.")
@json_option
def journal(
    config_file: str | None,
    account: str,
    limit: int,
    cursor: str | None,
    as_of: str | None,
    as_csv: bool,
    as_json: bool,
) -> None:
    """The account's movements, newest first, each with the balance after it.

    ACCOUNT is an account id or OWNER_TYPE:OWNER_ID. ``--csv`` prints the whole
    statement oldest first (``--limit`` and ``--cursor`` do not apply).
    """
    query = _journal_query(limit, cursor, as_of)
    if as_csv:
        _print_csv(config_file, account, query)
        return

    async def read(conn: AsyncConnection) -> tuple[Any, list[tuple[Any, Decimal]], str | None]:
        row = await _account(conn, account)
        rows, cursor = await statement.page(conn, row.id, query.limit, query.cursor, query.as_of)
        return row, rows, cursor

    row, rows, next_cursor = run_db(config_file, read)
    entries = [entry_read(entry, after) for entry, after in rows]
    if as_json:
        show(True, LedgerPage(entries=entries, count=len(entries), next_cursor=next_cursor), "")
        return
    if not entries:
        click.echo(f"no movements on {row.id}")
        return
    table = [
        [e.seq, rfc3339(e.created_at), e.kind, format_usd(e.amount),
         format_usd(e.balance_after), _what(e) or "-"]
        for e in entries
    ]  # fmt: skip
    headers = ["seq", "booked", "kind", "amount (USD)", "balance after", "what"]
    click.echo(render_table(headers, table))
    if next_cursor is not None:
        click.echo(f"\nmore: --cursor {next_cursor}")


def _print_csv(config_file: str | None, account: str, query: LedgerQuery) -> None:
    async def write(engine: AsyncEngine) -> None:
        async with engine.connect() as conn:
            row = await _account(conn, account)
        async for lines in statement.csv_lines(engine, row.id, query.as_of):
            click.echo(lines, nl=False)

    run_engine(config_file, write)
