"""The ``tollhouse`` command line, run as a user runs it: one process per command."""

from __future__ import annotations

import re
from collections import defaultdict
from datetime import datetime
from decimal import Decimal
from typing import Any

import openai
import pytest

from tollhouse.db.schema import head
from tollhouse.money import format_usd

from .conftest import Tollhouse
from .helpers import HELLO, cost, sqlite_query, table_names, wait_for_records

pytestmark = pytest.mark.e2e


def test_db_upgrade_current_downgrade_upgrade(tollhouse: Tollhouse) -> None:
    database, revision = tollhouse.database, head()

    assert tollhouse.run("db", "upgrade").strip() == f"database at revision {revision}"
    assert "usage_records" in table_names(database)
    assert sqlite_query(database, "SELECT version_num FROM alembic_version") == [(revision,)]

    lines = tollhouse.run("db", "current").splitlines()
    assert [line.split() for line in lines] == [["current:", revision], ["head:", revision]]

    out = tollhouse.run("db", "downgrade", "base")
    assert out.strip() == "database at revision base (empty)"
    assert "usage_records" not in table_names(database)

    assert tollhouse.run("db", "upgrade").strip() == f"database at revision {revision}"
    assert "usage_records" in table_names(database)
    assert sqlite_query(database, "SELECT count(*) FROM usage_records") == [(0,)]


def test_demo_runs_offline_and_prints_the_ledger(tollhouse: Tollhouse) -> None:
    # The demo starts its own dev upstream and gateway on free ports.
    out = tollhouse.run("demo", timeout=120)

    assert "unpriced model refused:   400 model_not_priced" in out
    assert re.search(r"request limit: +429 after \d+ more", out), out
    assert re.search(r"team budget: +402 after \d+ requests", out), out
    assert "Request rate limit reached for key 'notebook'" in out
    assert "Budget exceeded for team 'research'" in out
    assert re.search(r"prepaid credit: +402 insufficient_credits after \d+", out), out
    assert "Insufficient credits on account" in out
    assert re.search(r"top-up of 0.01 USD: +served again", out), out
    journal = out.split("The account's journal", 1)[1]
    assert re.search(r"^\s*grant\s+2\s", journal, re.M), journal
    assert re.search(r"^\s*post\s+\d+\s+-", journal, re.M), journal
    table = out.split("What the ledger recorded", 1)[1].split("Spend per scope", 1)[0]
    header = next(line for line in table.splitlines() if line.startswith("endpoint"))
    assert header.split() == [
        "endpoint",
        "provider/model",
        "stream",
        "requests",
        "prompt",
        "completion",
        "cost",
    ]
    rows = [line.split() for line in table.splitlines() if line.startswith(("chat", "embed"))]
    assert {row[1] for row in rows} == {
        "openai/gpt-4o-mini",
        "anthropic/claude-3-5-haiku-latest",
        "openai/text-embedding-3-small",
    }
    total = Decimal(0)
    for row in rows:
        total += Decimal(row[6])
        if row[3] == "1":  # one request: its cost follows from its own tokens
            provider, model = row[1].split("/", 1)
            assert Decimal(row[6]) == cost(provider, model, int(row[4]), int(row[5]))
    # Every request went through team 'research', whose spend is the ledger's total.
    scopes = out.split("Spend per scope", 1)[1]
    team = next(line.split() for line in scopes.splitlines() if line.startswith("team"))
    assert Decimal(team[2]) == total
    assert Decimal(team[2]) <= Decimal(team[3])


def _table(out: str) -> dict[str, list[str]]:
    """``tollhouse usage`` output as {group: [requests, prompt, completion, cost]}."""
    lines = out.strip().splitlines()
    assert lines[1].startswith("---"), out
    return {cells[0]: cells[1:] for cells in (re.split(r"\s{2,}", line) for line in lines[2:])}


def test_usage_by_model_and_by_day_totals_are_exact(tollhouse: Tollhouse) -> None:
    gateway = tollhouse.gateway(tollhouse.dev_upstream())
    expected: dict[str, list[Any]] = defaultdict(lambda: [0, 0, 0, Decimal(0)])

    def add(provider: str, model: str, prompt: int, completion: int) -> None:
        row = expected[model]
        row[0] += 1
        row[1] += prompt
        row[2] += completion
        row[3] += cost(provider, model, prompt, completion)

    with openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="sk-e2e", max_retries=0) as client:
        for model, provider, limits in (
            ("gpt-4o-mini", "openai", (1, 7, 16, 300)),
            ("claude-3-5-haiku-latest", "anthropic", (2, 9)),
        ):
            for limit in limits:
                reply = client.chat.completions.create(
                    model=model, messages=HELLO, max_tokens=limit
                )
                assert reply.usage is not None
                add(provider, model, reply.usage.prompt_tokens, reply.usage.completion_tokens)
        vectors = client.embeddings.create(model="text-embedding-3-small", input="a" * 4000)
        add("openai", "text-embedding-3-small", vectors.usage.prompt_tokens, 0)
    records = wait_for_records(gateway.url, 7)

    by_model = _table(tollhouse.run("usage", "--by", "model", env=tollhouse.env()))
    assert set(by_model) == {*expected, "TOTAL"}
    for model, (requests, prompt, completion, spent) in expected.items():
        assert by_model[model] == [str(requests), str(prompt), str(completion), format_usd(spent)]
    totals = [sum(row[i] for row in expected.values()) for i in range(3)]
    spent_total = sum((row[3] for row in expected.values()), Decimal(0))
    total_row = [*map(str, totals), format_usd(spent_total)]
    assert by_model["TOTAL"] == total_row

    by_day = _table(tollhouse.run("usage", "--by", "day", env=tollhouse.env()))
    days = {datetime.fromisoformat(r["created_at"]).date().isoformat() for r in records}
    assert set(by_day) == {*days, "TOTAL"}
    assert by_day["TOTAL"] == total_row
