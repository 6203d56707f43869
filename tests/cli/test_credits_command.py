"""``tollhouse credits``: accounts, grants, balances and the journal from the shell, through
the same service and body validation as the admin API (amounts exact); writes bump the
governance version, so a running server admits on a grant made here within its poll
interval."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update
from tests.cli.helpers import assert_ok, table_rows
from tests.governance.helpers import chat, create_customer, create_key
from tests.support import engine_for, wait_until

from tollhouse.credits import service
from tollhouse.credits.models import credit_accounts
from tollhouse.credits.schemas import AccountCreate
from tollhouse.governance.service import current_version
from tollhouse.web.validation import parse


def as_json(result: Any) -> Any:
    assert_ok(result)
    return json.loads(result.output, parse_float=Decimal)


def fields(output: str) -> dict[str, str]:
    """A field/value table as {field: value}."""
    lines = [line for line in output.split("\n\n")[0].splitlines()[2:] if line.strip()]
    return dict(re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in lines)


@pytest.fixture
def customer_id(invoke) -> str:
    assert_ok(invoke("db", "upgrade"))
    return str(as_json(invoke("customers", "create", "acme", "--json"))["id"])


@pytest.fixture
def account_id(invoke, customer_id) -> str:
    account = as_json(invoke("credits", "accounts", "create", "customer", customer_id, "--json"))
    return str(account["id"])


def version(db_path: Path) -> int:
    async def read() -> int:
        url = f"sqlite+aiosqlite:///{db_path}"
        async with engine_for(url) as engine, engine.connect() as conn:
            return await current_version(conn)

    return asyncio.run(read())


def test_accounts_create_list_show_update(invoke, customer_id, db_path):
    before = version(db_path)
    result = invoke(
        "credits", "accounts", "create", "customer", customer_id,
        "--overdraft-limit", "0.000000001", "--low-balance", "2.5",
    )  # fmt: skip
    assert_ok(result)
    shown = fields(result.output)
    assert shown["owner"] == f"customer {customer_id}"
    assert shown["overdraft limit"] == "0.000000001 USD"
    assert shown["low balance"] == "2.5 USD"
    assert shown["total"] == "0 USD"
    assert version(db_path) > before
    account_id = shown["id"]

    again = invoke("credits", "accounts", "create", "customer", customer_id)
    assert again.exit_code == 1
    assert "already has a credit account" in again.output
    unknown = invoke("credits", "accounts", "create", "team", "no-such-team")
    assert unknown.exit_code == 1
    assert "does not exist" in unknown.output

    listed = invoke("credits", "accounts", "list")
    assert_ok(listed)
    assert table_rows(listed.output)[account_id][:3] == ["customer", customer_id, "0"]
    page = as_json(invoke("credits", "accounts", "list", "--owner-type", "customer", "--json"))
    assert page["count"] == 1
    assert page["accounts"][0]["overdraft_limit"] == Decimal("0.000000001")
    assert as_json(invoke("credits", "accounts", "list", "--owner-type", "team", "--json")) == {
        "accounts": [],
        "count": 0,
    }
    assert invoke("credits", "accounts", "list", "--owner-type", "team").output.strip() == (
        "no credit accounts"
    )

    by_owner = as_json(invoke("credits", "accounts", "show", f"customer:{customer_id}", "--json"))
    assert by_owner["id"] == account_id
    assert by_owner["balance"] == {"total": 0, "reserved": 0, "available": 0}
    text = invoke("credits", "accounts", "show", account_id)
    assert "the journal's (funded − spent)" in text.output
    missing = invoke("credits", "accounts", "show", "team:nobody")
    assert missing.exit_code == 1
    assert "team 'nobody' has no credit account" in missing.output
    assert "not found" in invoke("credits", "accounts", "show", "acct_nope").output

    updated = as_json(
        invoke(
            "credits", "accounts", "update", f"customer:{customer_id}",
            "--overdraft-limit", "3", "--no-low-balance", "--json",
        )
    )  # fmt: skip
    assert (updated["overdraft_limit"], updated["low_balance"]) == (3, None)
    both = invoke(
        "credits", "accounts", "update", account_id, "--low-balance", "1", "--no-low-balance"
    )
    assert both.exit_code == 2
    negative = invoke("credits", "accounts", "update", account_id, "--overdraft-limit", "-1")
    assert negative.exit_code == 2
    assert "overdraft_limit" in negative.output


def test_auto_top_up_settings_are_shown(invoke, customer_id, db_path):
    url = f"sqlite+aiosqlite:///{db_path}"

    async def create() -> str:
        body = parse(
            AccountCreate,
            {
                "owner_type": "customer",
                "owner_id": customer_id,
                "auto_topup": {
                    "enabled": True,
                    "threshold": Decimal("5"),
                    "amount": Decimal("10"),
                    "monthly_cap": Decimal("50"),
                },
            },
        )
        async with engine_for(url) as engine, engine.begin() as conn:
            return str((await service.create_account(conn, body)).id)

    account_id = asyncio.run(create())
    shown = fields(invoke("credits", "accounts", "show", account_id).output)
    assert shown["auto top-up"] == "add 10 USD below 5 USD, at most 50 USD a month"

    async def turned_off() -> None:
        async with engine_for(url) as engine, engine.begin() as conn:
            await conn.execute(
                update(credit_accounts)
                .where(credit_accounts.c.id == account_id)
                .values(auto_topup_enabled=False, auto_topup_disabled_reason="3 failures")
            )

    asyncio.run(turned_off())
    shown = fields(invoke("credits", "accounts", "show", account_id).output)
    assert shown["auto top-up"] == "off (3 failures)"


def test_grants_are_exact_idempotent_and_validated(invoke, account_id, db_path):
    before = version(db_path)
    granted = as_json(
        invoke(
            "credits", "grant", account_id, "10.000000001", "--category", "referral",
            "--priority", "3", "--memo", "welcome", "--idempotency-key", "welcome-1", "--json",
        )
    )  # fmt: skip
    assert granted["message"] == "Grant created successfully"
    lot = granted["grant"]
    assert (lot["amount"], lot["remaining"], lot["status"]) == (
        Decimal("10.000000001"),
        Decimal("10.000000001"),
        "active",
    )
    assert (lot["category"], lot["priority"], lot["memo"]) == ("referral", 3, "welcome")
    assert version(db_path) > before

    again = invoke(
        "credits", "grant", account_id, "10.000000001", "--category", "referral",
        "--priority", "3", "--idempotency-key", "welcome-1",
    )  # fmt: skip
    assert_ok(again)
    assert "nothing new was booked" in again.output
    assert fields(again.output)["id"] == lot["id"]
    changed = invoke("credits", "grant", account_id, "11", "--idempotency-key", "welcome-1")
    assert changed.exit_code == 1
    assert "different grant" in changed.output

    # A negative amount is an argument, not an option; only an adjustment may be one.
    taken = invoke("credits", "grant", account_id, "-0.5", "--category", "adjustment")
    assert_ok(taken)
    assert fields(taken.output)["status"] == "booked"
    refused = invoke("credits", "grant", account_id, "-0.5")
    assert refused.exit_code == 2
    assert "only an adjustment may be negative" in refused.output

    later = invoke(
        "credits", "grant", account_id, "4", "--effective-at", "2099-01-01T00:00:00Z",
        "--expires-at", "2099-02-01T00:00:00Z",
    )  # fmt: skip
    assert_ok(later)
    assert fields(later.output)["status"] == "scheduled"
    assert fields(later.output)["expires"] == "2099-02-01T00:00:00.000000Z"

    for args, message in [
        (["0.0000000001"], "amount"),
        (["abc"], "is not a number"),
        (["0"], "must not be 0"),
        (["1", "--effective-at", "soon"], "effective_at"),
        (["1", "--priority", "1001"], "priority"),
        (["1", "--idempotency-key", " "], "printable characters"),
    ]:
        result = invoke("credits", "grant", account_id, *args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output, (args, result.output)
    wrong_order = invoke(
        "credits", "grant", account_id, "1", "--effective-at", "2099-01-01",
        "--expires-at", "2098-01-01",
    )  # fmt: skip
    assert wrong_order.exit_code == 1
    assert "expires_at must be after effective_at" in wrong_order.output
    unknown = invoke("credits", "grant", "acct_nope", "1")
    assert unknown.exit_code == 1
    assert "not found" in unknown.output

    balance = as_json(invoke("credits", "balance", account_id, "--json"))
    assert balance == {
        "account_id": account_id,
        "funded": Decimal("9.500000001"),
        "spent": 0,
        "total": Decimal("9.500000001"),
        "overdraft_limit": 0,
        "spendable": Decimal("9.500000001"),
        "source": "journal",
    }
    text = invoke("credits", "balance", account_id)
    assert fields(text.output)["total"] == "9.500000001 USD"
    assert "live figure" in text.output
    assert_ok(invoke("ledger", "verify"))


def test_the_journal_pages_and_prints_csv(invoke, account_id):
    assert (
        invoke("credits", "journal", account_id).output.strip() == f"no movements on {account_id}"
    )
    for amount in ("1", "2", "3"):
        assert_ok(invoke("credits", "grant", account_id, amount, "--memo", f"=grant {amount}"))

    first = invoke("credits", "journal", account_id, "--limit", "2")
    assert_ok(first)
    rows = table_rows(first.output.split("\n\nmore:")[0])
    assert [cells[2:4] for cells in rows.values()] == [["3", "6"], ["2", "3"]]
    cursor = first.output.rsplit("--cursor ", 1)[1].strip()
    page = as_json(invoke("credits", "journal", account_id, "--cursor", cursor, "--json"))
    assert (page["count"], page["next_cursor"]) == (1, None)
    [entry] = page["entries"]
    assert (entry["kind"], entry["amount"], entry["balance_after"]) == ("grant", 1, 1)
    assert entry["memo"] == "=grant 1"

    before_all = as_json(
        invoke("credits", "journal", account_id, "--as-of", "2000-01-01", "--json")
    )
    assert before_all["entries"] == []

    statement = invoke("credits", "journal", account_id, "--csv")
    assert_ok(statement)
    lines = list(csv.DictReader(io.StringIO(statement.output)))
    assert [(r["amount"], r["balance_after"], r["memo"]) for r in lines] == [
        ("1", "1", "'=grant 1"),
        ("2", "3", "'=grant 2"),
        ("3", "6", "'=grant 3"),
    ]
    for args in (["--limit", "0"], ["--cursor", "abc"], ["--as-of", "yesterday"]):
        result = invoke("credits", "journal", account_id, *args)
        assert result.exit_code == 2, (args, result.output)
    missing = invoke("credits", "journal", "acct_nope", "--csv")
    assert missing.exit_code == 1
    assert "not found" in missing.output


def test_a_command_without_a_database_says_so(invoke, tmp_path):
    empty = tmp_path / "empty.yaml"
    url = f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
    empty.write_text(f"database_url: {url}\nauto_migrate: false\n")
    for args in (["journal", "acct_x", "--csv"], ["balance", "acct_x"]):
        result = invoke("credits", *args, config_file=empty)
        assert result.exit_code == 1
        assert "database error: no such table" in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("database_url: mysql://nowhere/db\n")
    result = invoke("credits", "journal", "acct_x", "--csv", config_file=bad)
    assert result.exit_code == 1


# --- a running server sees what the CLI wrote ------------------------------------------


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """The CLI and the in-process server share one SQLite file (``make_settings``')."""
    return tmp_path / "tollhouse.db"


@pytest.fixture
def settings(make_settings):
    return make_settings(allow_anonymous=False, governance_poll_interval_s=0.2)


@pytest.mark.usefixtures("upstream")
async def test_a_running_server_admits_on_a_grant_made_by_the_cli(invoke, gateway):
    customer = await create_customer(gateway)
    _, value = await create_key(gateway, customer_id=customer["id"])
    created = await asyncio.to_thread(
        invoke, "credits", "accounts", "create", "customer", customer["id"], "--json"
    )
    account_id = as_json(created)["id"]

    async def status() -> int:
        return (await chat(gateway, value)).status_code

    await wait_until(lambda: _is(status, 402), what="402 without credit")
    assert_ok(await asyncio.to_thread(invoke, "credits", "grant", account_id, "1"))
    await wait_until(lambda: _is(status, 200), what="the CLI's grant admitted")


async def _is(status: Any, expected: int) -> bool:
    return bool(await status() == expected)
