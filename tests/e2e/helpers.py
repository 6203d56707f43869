"""Helpers of the end-to-end tests (those every directory shares are in tests/support.py)."""

from __future__ import annotations

import sqlite3
from decimal import Decimal
from pathlib import Path
from typing import Any

from tests.support import usage, wait_for

from tollhouse.pricing import load_catalog

CATALOG = load_catalog()
HELLO: Any = [{"role": "user", "content": "Say hello to Tollhouse."}]


def wait_for_records(url: str, count: int) -> list[dict[str, Any]]:
    """Records are written in batches off the request path; wait for ``count`` of them."""
    records: list[dict[str, Any]] = []

    def enough() -> bool:
        nonlocal records
        records = usage(url)
        return len(records) >= count

    wait_for(enough, what=f"{count} usage records")
    assert len(records) == count, records
    return records


def sqlite_query(database: Path, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    """Read the database file directly, as an operator would with ``sqlite3``."""
    with sqlite3.connect(database) as conn:
        return list(conn.execute(sql, params).fetchall())


def table_names(database: Path) -> set[str]:
    rows = sqlite_query(database, "SELECT name FROM sqlite_master WHERE type = 'table'")
    return {name for (name,) in rows}


def cost(provider: str, model: str, prompt: int, completion: int, cached: int = 0) -> Decimal:
    price = CATALOG.get(provider, model)
    assert price is not None
    return price.cost(prompt, completion, cached)
