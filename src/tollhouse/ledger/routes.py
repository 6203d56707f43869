"""``GET /api/usage``: the ledger, newest first, filtered and paginated (docs/ledger.md)."""

from __future__ import annotations

from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request
from starlette.responses import Response

from tollhouse.ledger.schemas import UsagePage, UsageQuery, UsageRecordRead
from tollhouse.ledger.service import UsageFilter, count_usage, list_usage
from tollhouse.web.responses import JSONResponse
from tollhouse.web.routing import Answer, Operation, Resource


class LedgerServices(Protocol):
    """What these routes use of the running service (``web/services.py``)."""

    @property
    def engine(self) -> AsyncEngine: ...


def _services(request: Request) -> LedgerServices:
    services: LedgerServices = request.app.services
    return services


async def usage(request: Request) -> Response:
    q = UsageQuery.parse(request.query_params)
    where = UsageFilter.of(q)
    async with _services(request).engine.connect() as conn:
        rows, next_cursor = await list_usage(conn, where, limit=q.limit, cursor=q.cursor)
        total = await count_usage(conn, where)
    records = [UsageRecordRead.from_row(row) for row in rows]
    return JSONResponse(
        UsagePage(usage=records, count=len(records), total=total, next_cursor=next_cursor)
    )


# Mounted under ``/api`` behind the admin key.
routes = [
    Resource(
        "/usage",
        {
            "GET": Operation(
                usage,
                "Usage records, newest first (see docs/ledger.md)",
                {200: Answer(UsagePage, "One page")},
                query=UsageQuery,
                tag="usage",
            )
        },
    )
]
