"""The request log: the ledger filtered and paged by cursor, a detail drawer, a live tail
and a CSV export, all from ``ledger.service.list_usage`` (docs/dashboard.md, *Log*).

Nothing here counts the ledger (a ``COUNT(*)`` at ten million records is what made other
gateways' log pages stop loading): a page is one keyset query, and so is each refresh of
the live tail, which asks for the first page again — records are written in batches,
so a record can arrive older than the newest one shown, and only re-reading the top
shows it in its place.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from tollhouse.dashboard.access import Visitor
from tollhouse.dashboard.pages import Names, names, page, query_without, services
from tollhouse.dashboard.render import PAGE_HEADERS, html
from tollhouse.errors import ValidationFailed
from tollhouse.ledger.schemas import UsageQuery, UsageRecordRead
from tollhouse.ledger.service import UsageFilter, get_usage, list_usage
from tollhouse.money import format_usd
from tollhouse.web.responses import rfc3339

PAGE_SIZE = 50
EXPORT_BATCH = 1000
FILTERS = ("since", "until", "key_id", "team_id", "customer_id", "model", "status",
           "min_cost", "max_cost", "session_id")  # fmt: skip
CSV_COLUMNS = tuple(UsageRecordRead.model_fields) + ("key_name", "team_name", "customer_name")


_CANCELLED = "57014"  # Postgres: query_canceled (statement_timeout)


class TooSlow(ValidationFailed):
    """A page the database would not find in time: the filters are the client's to
    narrow (a 400 naming no field; on the log page, a notice above an empty table)."""


def _parse(request: Request) -> tuple[UsageQuery, str | None]:
    """The filters, or none and the error that refused them (shown on the page)."""
    try:
        return UsageQuery.parse(request.query_params), None
    except ValidationFailed as exc:
        return UsageQuery(), exc.message


async def _page(request: Request, q: UsageQuery) -> tuple[list[Any], str | None]:
    """One page; ``TooSlow`` past ``dashboard_query_timeout_s`` (Postgres): filters no
    index serves (status, cost) that match nothing recent read the whole ledger."""
    limit_ms = int(services(request).settings.dashboard_query_timeout_s * 1000)
    try:
        async with services(request).engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                await conn.execute(text(f"SET LOCAL statement_timeout = {limit_ms}"))
            return await list_usage(conn, UsageFilter.of(q), limit=PAGE_SIZE, cursor=q.cursor)
    except DBAPIError as exc:
        if getattr(exc.orig, "sqlstate", None) != _CANCELLED:
            raise
        raise TooSlow(
            "no page within the database's time limit: these filters match too few "
            "records to find quickly; narrow the time range (From, To) or pick a key"
        ) from None


def _context(request: Request, rows: list[Any], cursor: str | None) -> dict[str, Any]:
    tailing = request.query_params.get("tail") == "1" and not request.query_params.get("cursor")
    return {
        "rows": rows,
        "names": names(request),
        "next_query": query_without(request, "cursor", "tail", cursor=cursor) if cursor else None,
        "rows_query": query_without(request, "cursor", "tail"),
        "tailing": tailing,
        "tail_every": services(request).settings.dashboard_tail_interval_s,
    }


@page
async def log_page(request: Request, who: Visitor) -> Response:
    q, error = _parse(request)
    rows: list[Any] = []
    cursor = None
    if error is None:
        try:
            rows, cursor = await _page(request, q)
        except TooSlow as exc:
            error = exc.message
    n = names(request)
    context = {
        **_context(request, rows, cursor),
        "title": "Request log",
        "nav": "logs",
        "error": error,
        "filters": {name: request.query_params.get(name, "") for name in FILTERS},
        "keys": n.choices("key"),
        "teams": n.choices("team"),
        "customers": n.choices("customer"),
        "csv_query": query_without(request, "cursor", "tail"),
        "tail_query": query_without(request, "cursor", "tail", tail=1),
        "still_query": query_without(request, "cursor", "tail"),
    }
    return html(request, "logs.html", context, who, 400 if error else 200)


@page
async def log_rows(request: Request, who: Visitor) -> Response:
    """The first page's rows alone: what the live tail swaps in, one request a refresh."""
    q, error = _parse(request)
    if error is not None:
        raise ValidationFailed(error)
    rows, cursor = await _page(request, q)
    return html(request, "logs_rows.html", _context(request, rows, cursor), who)


@page
async def log_detail(request: Request, who: Visitor) -> Response:
    async with services(request).engine.connect() as conn:
        row = await get_usage(conn, request.path_params["id"])
    record = UsageRecordRead.from_row(row)
    return html(request, "log_detail.html", {"r": record, "names": names(request)}, who)


@page
async def log_csv(request: Request, who: Visitor) -> Response:
    """Every record the filters select, newest first, streamed a batch at a time from the
    same query as the page (so the file is what the log shows, whatever its size)."""
    q, error = _parse(request)
    if error is not None:
        raise ValidationFailed(error)
    where = UsageFilter.of(q)
    engine = services(request).engine
    n = names(request)

    async def lines() -> AsyncIterator[str]:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(CSV_COLUMNS)
        yield _drain(out)
        cursor: str | None = None
        async with engine.connect() as conn:
            while True:
                rows, cursor = await list_usage(conn, where, limit=EXPORT_BATCH, cursor=cursor)
                for row in rows:
                    writer.writerow(_csv_row(row, n))
                yield _drain(out)
                if cursor is None:
                    return

    headers = {
        **PAGE_HEADERS,
        "content-disposition": 'attachment; filename="tollhouse-usage.csv"',
    }
    return StreamingResponse(lines(), media_type="text/csv; charset=utf-8", headers=headers)


def _cell(value: Any) -> Any:
    """A value as the admin API writes it: exact money, RFC 3339 times, JSON booleans."""
    if isinstance(value, Decimal):
        return format_usd(value)
    if isinstance(value, datetime):
        return rfc3339(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else value


def _csv_row(row: Any, n: Names) -> list[Any]:
    record = UsageRecordRead.from_row(row).model_dump()
    values = [_cell(record[name]) for name in UsageRecordRead.model_fields]
    return [*values, n.of("key", row.key_id), n.of("team", row.team_id),
            n.of("customer", row.customer_id)]  # fmt: skip


def _drain(out: io.StringIO) -> str:
    text = out.getvalue()
    out.seek(0)
    out.truncate()
    return text
