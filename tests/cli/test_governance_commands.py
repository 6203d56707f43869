"""``tollhouse customers|teams|keys``: on a SQLite file, through the service layer."""

from __future__ import annotations

import json
import sqlite3
from decimal import Decimal

import pytest
from tests.cli.helpers import assert_ok


def details(output: str) -> dict[str, str]:
    """A field/value table as a dict."""
    lines = [line for line in output.splitlines() if line.strip()]
    assert lines[0].split() == ["field", "value"], output
    rows: dict[str, str] = {}
    for line in lines[2:]:
        if not line.startswith("  ") and "  " in line:
            field, _, value = line.partition("  ")
            rows[field.strip()] = value.strip()
    return rows


def version(db_path) -> int:
    with sqlite3.connect(db_path) as conn:
        return int(conn.execute("SELECT version FROM governance_state").fetchone()[0])


def as_json(result) -> object:
    assert_ok(result)
    return json.loads(result.output, parse_float=Decimal)


@pytest.fixture
def run(invoke):
    def call(*args: str) -> object:
        return as_json(invoke(*args, "--json"))

    return call


def test_customer_lifecycle(invoke, run, db_path):
    result = invoke("customers", "create", "acme", "--budget", "10", "--reset", "1M")
    assert_ok(result)
    shown = details(result.output)
    assert shown["name"] == "acme" and shown["budget"] == "10 USD / 1M"
    customer_id = shown["id"]
    assert version(db_path) == 1

    listed = invoke("customers", "list")
    assert_ok(listed)
    assert listed.output.splitlines()[0].split() == ["id", "name", "budget", "rate", "limit",
                                                     "teams"]  # fmt: skip
    assert customer_id in listed.output and "10 USD / 1M" in listed.output

    updated = run("customers", "update", customer_id, "--name", "acme2", "--budget", "25.5")
    assert updated["name"] == "acme2"
    assert updated["budget"]["max_limit"] == Decimal("25.5")
    assert updated["budget"]["reset_duration"] == "1M"  # merged, not replaced
    assert version(db_path) == 2

    assert run("customers", "show", customer_id)["name"] == "acme2"
    removed = run("customers", "update", customer_id, "--no-budget")
    assert removed["budget"] is None

    result = invoke("customers", "delete", customer_id)
    assert_ok(result)
    assert result.output.strip() == f"deleted customer {customer_id}"
    assert invoke("customers", "list").output.strip() == "no customers"
    assert version(db_path) == 4


def test_team_with_customer_and_rate_limits(invoke, run):
    customer = run("customers", "create", "acme")
    team = run(
        "teams", "create", "search", "--customer", customer["id"],
        "--request-limit", "100", "--request-reset", "1m",
        "--token-limit", "5000", "--token-reset", "1h",
        "--budget", "0.000001", "--reset", "1d", "--calendar", "--timezone", "Europe/Paris",
        "--hard-limit-ratio", "1.10", "--alerts", "0.5, 1",
    )  # fmt: skip
    assert team["customer"]["name"] == "acme"
    assert team["rate_limit"]["request_max_limit"] == 100
    assert team["rate_limit"]["token_reset_duration"] == "1h"
    budget = team["budget"]
    assert budget["max_limit"] == Decimal("0.000001")
    assert budget["calendar_aligned"] is True and budget["timezone"] == "Europe/Paris"
    assert budget["hard_limit_ratio"] == Decimal("1.1")
    assert budget["alert_thresholds"] == [Decimal("0.5"), 1]

    text = invoke("teams", "show", team["id"])
    assert_ok(text)
    shown = details(text.output)
    assert shown["rate limit"] == "100 req/1m, 5000 tok/1h"
    assert shown["budget"] == "0.000001 USD / 1d (calendar, Europe/Paris) x1.1"

    other = run("teams", "create", "alone")
    assert [t["name"] for t in run("teams", "list", "--customer", customer["id"])] == ["search"]
    assert len(run("teams", "list")) == 2
    detached = run("teams", "update", team["id"], "--no-customer", "--no-rate-limit")
    assert detached["customer_id"] is None and detached["rate_limit"] is None
    moved = run("teams", "update", other["id"], "--customer", customer["id"])
    assert moved["customer_id"] == customer["id"]
    assert_ok(invoke("teams", "delete", other["id"]))
    assert [t["name"] for t in run("teams", "list")] == ["search"]


def test_key_value_is_printed_once(invoke, run):
    result = invoke("keys", "create", "ci", "--models", "gpt-4o-mini, claude-haiku-4-5")
    assert_ok(result)
    values = [word for word in result.output.split() if word.startswith("th-") and "…" not in word]
    assert len(values) == 1 and len(values[0]) == 43
    assert "shown only now" in result.output
    shown = details(result.output.split("\n\n")[0])
    assert shown["models"] == "gpt-4o-mini, claude-haiku-4-5"
    assert shown["providers"] == "all"
    key_id = shown["id"]

    again = invoke("keys", "show", key_id)
    assert_ok(again)
    assert values[0] not in again.output
    assert details(again.output)["key"] == shown["key"]
    listing = invoke("keys", "list")
    assert_ok(listing)
    assert values[0] not in listing.output and shown["key"] in listing.output


def test_key_options_and_updates(invoke, run):
    team = run("teams", "create", "t")
    customer = run("customers", "create", "c")
    key = run(
        "keys", "create", "k", "--team", team["id"], "--description", "d",
        "--providers", "openai", "--max-parallel", "3", "--expires", "2030-01-01",
        "--budget", "1000000000", "--reset", "1Y", "--inactive",
    )  # fmt: skip
    assert key["team_id"] == team["id"] and key["description"] == "d"
    assert key["allowed_providers"] == ["openai"] and key["allowed_models"] is None
    assert key["max_parallel_requests"] == 3 and key["is_active"] is False
    assert key["expires_at"] == "2030-01-01T00:00:00.000000Z"
    assert key["budget"]["max_limit"] == 1000000000
    assert key["value"].startswith("th-") and "…" not in key["value"]

    moved = run("keys", "update", key["id"], "--customer", customer["id"], "--active")
    assert moved["customer_id"] == customer["id"] and moved["team_id"] is None
    assert moved["is_active"] is True and "…" in moved["value"]
    cleared = run(
        "keys", "update", key["id"], "--detach", "--all-providers", "--no-max-parallel",
        "--no-expiry", "--models", "", "--name", "renamed",
    )  # fmt: skip
    assert cleared["customer_id"] is None and cleared["allowed_providers"] is None
    assert cleared["max_parallel_requests"] is None and cleared["expires_at"] is None
    assert cleared["allowed_models"] == [] and cleared["name"] == "renamed"
    limited = run("keys", "update", key["id"], "--request-limit", "5", "--request-reset", "1m")
    assert limited["rate_limit"]["request_max_limit"] == 5
    assert [k["id"] for k in run("keys", "list", "--team", team["id"])] == []
    assert_ok(invoke("keys", "delete", key["id"]))
    assert invoke("keys", "list").output.strip() == "no keys"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("customers", "create", "c", "--budget", "10"), "reset_duration"),
        (("customers", "create", "c", "--budget", "-1", "--reset", "1h"), "negative"),
        (("customers", "create", "c", "--budget", "1", "--reset", "1 hour"), "duration"),
        (("teams", "create", "t", "--request-limit", "5"), "request_reset_duration"),
        (("keys", "create", "k", "--team", "a", "--customer", "b"), "both Team and Customer"),
        (("keys", "create", "k", "--expires", "soon"), "expires_at"),
        (("keys", "create", "  "), "name is required"),
    ],
)
def test_bad_input_is_a_usage_error(invoke, db_path, args, message):
    assert_ok(invoke("db", "upgrade"))
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert version(db_path) == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("customers", "show", "ghost"), "Customer not found"),
        (("teams", "delete", "ghost"), "Team not found"),
        (("keys", "update", "ghost", "--name", "x"), "Virtual key not found"),
        (("teams", "create", "t", "--customer", "ghost"), "ghost"),
    ],
)
def test_unknown_ids_fail_cleanly(invoke, args, message):
    result = invoke(*args)
    assert result.exit_code == 1, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_bad_number_option(invoke):
    result = invoke("customers", "create", "c", "--budget", "ten", "--reset", "1h")
    assert result.exit_code == 2 and "not a number" in result.output


def test_empty_lists(invoke):
    for group, text in (("customers", "no customers"), ("teams", "no teams"), ("keys", "no keys")):
        result = invoke(group, "list")
        assert_ok(result)
        assert result.output.strip() == text
