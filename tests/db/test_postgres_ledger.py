"""The ledger on a real Postgres: 1,000 records through the recorder, exact spend, the API."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections import defaultdict
from datetime import timedelta
from decimal import Decimal

import httpx
from sqlalchemy import func, select, text
from tests.ledger.records import T0, usage_record

from tollhouse.app import create_app
from tollhouse.ledger import UsageRecorder
from tollhouse.ledger.models import usage_records
from tollhouse.ledger.service import UsageFilter, spend_by
from tollhouse.ops.metrics import Metrics


def thousand_records():
    rng = random.Random(1000)
    return [
        usage_record(
            id=f"req_{i:05d}",
            created_at=T0 + timedelta(minutes=rng.randrange(0, 60 * 24 * 3)),
            key_id=rng.choice(["k1", "k2", None]),
            model=rng.choice(["gpt-4o-mini", "claude-haiku-4-5"]),
            prompt_tokens=rng.randrange(0, 5000),
            completion_tokens=rng.randrange(0, 500),
            cost=Decimal(rng.randrange(1, 10**12)) / Decimal(10**9),
        )
        for i in range(1000)
    ]


async def count(engine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(usage_records))).scalar())


async def test_recorder_writes_1000_records_and_spend_is_exact(pg_engine):
    records = thousand_records()
    recorder = UsageRecorder(pg_engine, Metrics(), batch_size=128, flush_interval_ms=5)
    await recorder.start()
    for record in records:
        recorder.add(record)
    recorder.add(records[0])  # a duplicate id is ignored
    await recorder.stop()
    assert await count(pg_engine) == 1000

    expected_total = sum((r.cost for r in records), Decimal(0))
    async with pg_engine.connect() as conn:
        raw_total = (await conn.execute(text("SELECT sum(cost) FROM usage_records"))).scalar()
        by_key = await spend_by(conn, "key", UsageFilter())
        by_model = await spend_by(conn, "model", UsageFilter())
        by_day = await spend_by(conn, "day", UsageFilter())
    assert raw_total == expected_total

    def expected(key):
        groups: dict[str, Decimal] = defaultdict(Decimal)
        counts: dict[str, int] = defaultdict(int)
        for r in records:
            name = key(r) or "-"
            groups[name] += r.cost
            counts[name] += 1
        return {name: (counts[name], groups[name]) for name in groups}

    assert {r.group: (r.requests, r.cost) for r in by_key} == expected(lambda r: r.key_id)
    assert {r.group: (r.requests, r.cost) for r in by_model} == expected(lambda r: r.model)
    assert {r.group: (r.requests, r.cost) for r in by_day} == expected(
        lambda r: r.created_at.date().isoformat()
    )
    for rows in (by_key, by_model, by_day):
        assert sum((r.cost for r in rows), Decimal(0)) == expected_total


async def test_money_column_is_numeric_38_9(pg_engine):
    recorder = UsageRecorder(pg_engine, Metrics())
    recorder.add(usage_record(id="a", cost=Decimal("123456789.123456789")))
    recorder.add(usage_record(id="b", cost=Decimal("0.000000001")))
    await recorder.flush()
    async with pg_engine.connect() as conn:
        kind = (
            await conn.execute(
                text(
                    "SELECT data_type, numeric_precision, numeric_scale "
                    "FROM information_schema.columns "
                    "WHERE table_name = 'usage_records' AND column_name = 'cost'"
                )
            )
        ).one()
        rows = (await conn.execute(text("SELECT id, cost FROM usage_records ORDER BY id"))).all()
    assert tuple(kind) == ("numeric", 38, 9)
    assert [tuple(r) for r in rows] == [
        ("a", Decimal("123456789.123456789")),
        ("b", Decimal("0.000000001")),
    ]


async def test_gateway_on_postgres_end_to_end(pg_url, upstream, make_settings):
    app = create_app(make_settings(database_url=pg_url))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            sent = []
            for _ in range(3):
                response = await client.post(
                    "/v1/chat/completions",
                    json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
                )
                assert response.status_code == 200, response.text
                sent.append(response.headers["x-request-id"])
            health = await client.get("/health")
            assert health.json()["database"] == "connected"
            await app.services.recorder.flush()
            first = json.loads(
                (await client.get("/api/usage", params={"limit": 2})).text, parse_float=Decimal
            )
            second = json.loads(
                (
                    await client.get(
                        "/api/usage", params={"limit": 2, "cursor": first["next_cursor"]}
                    )
                ).text,
                parse_float=Decimal,
            )
    records = first["usage"] + second["usage"]
    assert [r["id"] for r in records] == list(reversed(sent))
    assert second["next_cursor"] is None
    assert {r["cost"] for r in records} == {Decimal("0.0000102")}
    assert first["total"] == 3


async def test_a_record_the_database_refuses_does_not_block_the_ledger(pg_engine):
    # The model name comes from the client (any name is served where unpriced use is
    # allowed); Postgres enforces the column's 256 characters. One such record must not
    # stop every later record from being written.
    recorder = UsageRecorder(pg_engine, Metrics(), batch_size=10, flush_interval_ms=10)
    await recorder.start()
    try:
        recorder.add(usage_record(id="req_long", model="m" * 300))
        for i in range(5):
            recorder.add(usage_record(id=f"req_ok_{i}"))
        for _ in range(100):
            if await count(pg_engine) >= 5:
                break
            await asyncio.sleep(0.02)
        async with pg_engine.connect() as conn:
            written = set((await conn.execute(select(usage_records.c.id))).scalars().all())
        assert {f"req_ok_{i}" for i in range(5)} <= written
    finally:
        # While a batch keeps failing, stop() retries for ever; do not hang the suite.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1):
                await recorder.stop()
