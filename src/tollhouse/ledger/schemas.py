"""Usage record values and their JSON form."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

import orjson

from tollhouse.money import format_usd

Status = Literal["success", "error", "cancelled"]


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """One request's consumption, exactly as the ledger stores it."""

    id: str
    created_at: datetime
    endpoint: str
    provider: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int
    cost: Decimal
    priced: bool
    latency_ms: float
    status: Status
    http_status: int
    streamed: bool
    key_id: str | None = None
    team_id: str | None = None
    customer_id: str | None = None
    upstream_request_id: str | None = None
    error: str | None = None

    def row(self) -> dict[str, Any]:
        # Not dataclasses.asdict: it deep-copies every field, and this runs per record.
        return {name: getattr(self, name) for name in _FIELDS}


_FIELDS = tuple(f.name for f in fields(UsageRecord))


def record_json(row: Any) -> dict[str, Any]:
    """A ledger row as the admin API shows it; cost is an exact JSON number (no float)."""
    # Column names come back as str subclasses, which orjson will not take as keys.
    data = {str(name): value for name, value in zip(row._fields, row, strict=True)}
    data["created_at"] = data["created_at"].isoformat()
    data["cost"] = usd_json(data["cost"])
    return data


def usd_json(amount: Decimal) -> orjson.Fragment:
    """A USD amount as a raw JSON number, digit for digit (orjson would need a float)."""
    return orjson.Fragment(format_usd(amount).encode())
