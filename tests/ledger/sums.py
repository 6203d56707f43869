"""The roll-ups as the tests expect them, computed here from the records alone (not
through ``ledger/rollups.py``): grouped by UTC hour or day and dimensions in plain
Python, and the tables and the ledger read back for comparing."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tollhouse.ledger.models import (
    LATENCY_BOUNDS_MS,
    MEASURES,
    usage_daily,
    usage_hourly,
    usage_records,
)

TABLES = {"hour": usage_hourly, "day": usage_daily}
Rows = dict[tuple[Any, ...], dict[str, Any]]


def bucket(moment: datetime, grain: str) -> datetime:
    moment = moment.astimezone(UTC)
    day = datetime(moment.year, moment.month, moment.day, tzinfo=UTC)
    return day + timedelta(hours=moment.hour) if grain == "hour" else day


def latency_index(latency_ms: float) -> int:
    for i, bound in enumerate(LATENCY_BOUNDS_MS):
        if latency_ms <= bound:
            return i
    return len(LATENCY_BOUNDS_MS)


def dims(record: Mapping[str, Any]) -> tuple[str, ...]:
    return (
        record["customer_id"] or "",
        record["team_id"] or "",
        record["key_id"] or "",
        record["model"],
        record["provider"],
        record["status"],
    )


def grouped(records: Iterable[Mapping[str, Any]], grain: str) -> Rows:
    """The rows a roll-up table of ``grain`` must hold for ``records``."""
    rows: Rows = {}
    for record in records:
        key = (bucket(record["created_at"], grain), *dims(record))
        row = rows.setdefault(key, {name: 0 for name in MEASURES} | {"cost": Decimal(0)})
        row["requests"] += 1
        row["prompt_tokens"] += record["prompt_tokens"]
        row["completion_tokens"] += record["completion_tokens"]
        row["cached_tokens"] += record["cached_tokens"]
        row["cost"] += record["cost"]
        row["streamed"] += int(bool(record["streamed"]))
        row[f"lat_{latency_index(record['latency_ms']):02d}"] += 1
    return rows


async def ledger(conn: AsyncConnection) -> list[dict[str, Any]]:
    """Every record in ``usage_records``."""
    return [dict(row._mapping) for row in await conn.execute(select(usage_records))]


async def stored(conn: AsyncConnection, grain: str) -> Rows:
    table = TABLES[grain]
    rows: Rows = {}
    for row in await conn.execute(select(table)):
        values = row._mapping
        key = (values["bucket"], *(values[n] for n in ("customer_id", "team_id", "key_id")))
        key += (values["model"], values["provider"], values["status"])
        rows[key] = {n: values[n] if n == "cost" else int(values[n]) for n in MEASURES}
    return rows


async def assert_rolled_up(engine: AsyncEngine) -> int:
    """Both tables equal the group-by of the ledger's records; how many records."""
    async with engine.connect() as conn:
        records = await ledger(conn)
        for grain in TABLES:
            assert await stored(conn, grain) == grouped(records, grain), grain
    return len(records)
