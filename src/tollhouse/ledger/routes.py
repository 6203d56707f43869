"""``GET /api/usage``: the ledger, newest first, filtered and paginated."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
from starlette.requests import Request
from starlette.responses import Response

from tollhouse.errors import ValidationFailed
from tollhouse.governance.bounds import preview
from tollhouse.governance.query import count
from tollhouse.governance.routes import resource
from tollhouse.ledger.schemas import record_json
from tollhouse.ledger.service import UsageFilter, count_usage, list_usage

MAX_LIMIT = 1000


def parse_time(value: str | None, param: str) -> datetime | None:
    """ISO 8601 (``2026-11-21T10:00:00Z``, a date alone) or Unix seconds, as aware UTC."""
    if value is None or value == "":
        return None
    try:
        number = value.replace(".", "", 1)
        if number.isascii() and number.isdigit():
            return datetime.fromtimestamp(float(value), UTC)
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except (ValueError, OverflowError, OSError):
        raise ValidationFailed(
            f"{param} must be an ISO 8601 time or Unix seconds, got {preview(value)}", param=param
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


async def usage(request: Request) -> Response:
    q = request.query_params
    where = UsageFilter(
        key_id=q.get("key_id") or q.get("virtual_key_id") or None,
        team_id=q.get("team_id") or None,
        customer_id=q.get("customer_id") or None,
        model=q.get("model") or None,
        since=parse_time(q.get("since"), "since"),
        until=parse_time(q.get("until"), "until"),
    )
    limit = count(q, "limit", default=50, low=1, high=MAX_LIMIT)
    async with request.app.state.engine.connect() as conn:
        rows, next_cursor = await list_usage(conn, where, limit=limit, cursor=q.get("cursor"))
        total = await count_usage(conn, where)
    body = {
        "usage": [record_json(row) for row in rows],
        "count": len(rows),
        "total": total,
        "next_cursor": next_cursor,
    }
    return Response(orjson.dumps(body), media_type="application/json")


routes = [resource("/usage", {"GET": usage})]
