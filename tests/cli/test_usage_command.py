"""``tollhouse usage --by …``: a table of exact spend with a total line."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from decimal import Decimal

import httpx
from tests.cli.helpers import assert_ok, table_rows
from tests.ledger.records import T0, usage_record
from tests.support import upstream_env

from tollhouse.app import create_app
from tollhouse.config import load_settings

RECORDS = [
    usage_record(id="r1", model="gpt-4o-mini", key_id="k1", cost=Decimal("0.0000102"),
                 prompt_tokens=4, completion_tokens=16),
    usage_record(id="r2", model="gpt-4o-mini", key_id="k2", cost=Decimal("0.0000045"),
                 prompt_tokens=10, completion_tokens=5, created_at=T0 + timedelta(days=1)),
    usage_record(id="r3", model="claude-haiku-4-5", key_id="k1", cost=Decimal("1.5"),
                 prompt_tokens=100, completion_tokens=200, created_at=T0 + timedelta(days=1)),
    usage_record(id="r4", model="claude-haiku-4-5", key_id=None, cost=Decimal("0.000000001"),
                 prompt_tokens=1, completion_tokens=1, created_at=T0 + timedelta(days=2)),
]  # fmt: skip


def test_no_usage(invoke):
    assert_ok(invoke("db", "upgrade"))
    result = invoke("usage")
    assert_ok(result)
    assert result.output.strip() == "no usage recorded"


def test_usage_by_model(invoke, write_records):
    write_records(RECORDS)
    result = invoke("usage", "--by", "model")
    assert_ok(result)
    header = result.output.splitlines()[0].split()
    assert header[0] == "model"
    assert table_rows(result.output) == {
        "claude-haiku-4-5": ["2", "101", "201", "1.500000001"],
        "gpt-4o-mini": ["2", "14", "21", "0.0000147"],
        "TOTAL": ["4", "115", "222", "1.500014701"],
    }


def test_usage_by_day(invoke, write_records):
    write_records(RECORDS)
    result = invoke("usage", "--by", "day")
    assert_ok(result)
    assert table_rows(result.output) == {
        "2026-11-21": ["1", "4", "16", "0.0000102"],
        "2026-11-22": ["2", "110", "205", "1.5000045"],
        "2026-11-23": ["1", "1", "1", "0.000000001"],
        "TOTAL": ["4", "115", "222", "1.500014701"],
    }


def test_usage_by_key(invoke, write_records):
    write_records(RECORDS)
    result = invoke("usage", "--by", "key")
    assert_ok(result)
    assert table_rows(result.output) == {
        "-": ["1", "1", "1", "0.000000001"],
        "k1": ["2", "104", "216", "1.5000102"],
        "k2": ["1", "10", "5", "0.0000045"],
        "TOTAL": ["4", "115", "222", "1.500014701"],
    }


def test_usage_filters(invoke, write_records):
    write_records(RECORDS)
    result = invoke("usage", "--by", "key", "--model", "gpt-4o-mini")
    assert_ok(result)
    assert set(table_rows(result.output)) == {"k1", "k2", "TOTAL"}
    result = invoke("usage", "--by", "model", "--since", "2026-11-22", "--until", "2026-11-23")
    assert_ok(result)
    assert table_rows(result.output)["TOTAL"] == ["2", "110", "205", "1.5000045"]


def test_usage_bad_time_is_a_usage_error(invoke, write_records):
    write_records(RECORDS[:1])
    result = invoke("usage", "--since", "last tuesday")
    assert result.exit_code == 2
    assert "since" in result.output


def test_usage_bad_group_is_a_usage_error(invoke):
    result = invoke("usage", "--by", "colour")
    assert result.exit_code == 2


def test_usage_after_real_requests(invoke, config, db_path, upstream):
    async def serve_three() -> None:
        settings = load_settings(
            config,
            env={"TOLLHOUSE_CONFIG": "/dev/null", **upstream_env(upstream.url)},
            retry_backoff_s=0.0,
            allow_anonymous=True,
        )
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 1))
            base = "http://127.0.0.1"
            async with httpx.AsyncClient(transport=transport, base_url=base) as client:
                for model in ("gpt-4o-mini", "gpt-4o-mini", "claude-haiku-4-5"):
                    response = await client.post(
                        "/v1/chat/completions",
                        json={"model": model, "messages": [{"role": "user", "content": "hi"}]},
                    )
                    assert response.status_code == 200, response.text
        # The lifespan's shutdown wrote every record.

    asyncio.run(serve_three())
    result = invoke("usage", "--by", "model")
    assert_ok(result)
    # gpt-4o-mini: 2 × (4 × 0.15 + 16 × 0.60) = 20.4; claude-haiku-4-5: 4 × 1 + 16 × 5 = 84
    assert table_rows(result.output) == {
        "claude-haiku-4-5": ["1", "4", "16", "0.000084"],
        "gpt-4o-mini": ["2", "8", "32", "0.0000204"],
        "TOTAL": ["3", "12", "48", "0.0001044"],
    }
