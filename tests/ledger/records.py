"""Usage records for tests: plausible defaults, any field overridable."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from tollhouse.ledger import UsageRecord

T0 = datetime(2026, 11, 21, 10, 0, 0, tzinfo=UTC)


def usage_record(**fields: Any) -> UsageRecord:
    """A usage record with plausible defaults; any field may be given."""
    values: dict[str, Any] = {
        "id": "req_x",
        "created_at": T0,
        "endpoint": "chat",
        "provider": "openai",
        "model": "gpt-4o-mini",
        "prompt_tokens": 4,
        "completion_tokens": 16,
        "cached_tokens": 0,
        "cost": Decimal("0.0000102"),
        "priced": True,
        "latency_ms": 12.5,
        "status": "success",
        "http_status": 200,
        "streamed": False,
    }
    values.update(fields)
    return UsageRecord(**values)
