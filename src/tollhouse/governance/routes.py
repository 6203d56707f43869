"""``/api/governance/*``: Bifrost-compatible CRUD of customers, teams and virtual keys,
usage counters and debug views.

Handlers are thin: parse the body or the query (``schemas``, through the toolkit), run
one service call in one transaction, tell the admission engine (``GovernanceServices``)
to reload, shape the reply (``answers``). When no engine runs in the process, budgets
show no spend and the stored window anchors. Each route says what it takes and answers
(``web.routing.Operation``): the OpenAPI document is built from that.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request
from starlette.responses import Response

from tollhouse.db import ping
from tollhouse.governance import service
from tollhouse.governance.answers import (
    UsageMeter,
    customer_read,
    key_read,
    key_usage,
    team_read,
)
from tollhouse.governance.schemas import (
    CounterRead,
    CustomerCreate,
    CustomerList,
    CustomerOne,
    CustomerUpdate,
    CustomerWritten,
    DatabaseHealthy,
    DatabaseStats,
    DatabaseUnhealthy,
    DebugCounters,
    DebugStats,
    Health,
    HealthChecks,
    Message,
    PluginStats,
    TeamCreate,
    TeamList,
    TeamOne,
    TeamsQuery,
    TeamUpdate,
    TeamWritten,
    UsageReset,
    UsageStats,
    UsageStatsAll,
    UsageStatsOne,
    UsageStatsQuery,
    VirtualKeyCreate,
    VirtualKeyList,
    VirtualKeyOne,
    VirtualKeysQuery,
    VirtualKeyUpdate,
    VirtualKeyWritten,
)
from tollhouse.web.query import Query
from tollhouse.web.responses import JSONResponse
from tollhouse.web.routing import Answer, Operation, Resource
from tollhouse.web.validation import read_model

_HEALTH_TIMEOUT_S = 2.0


class AdmissionEngine(UsageMeter, Protocol):
    """What these routes ask of the admission engine (``admission`` imports
    ``governance``, so it is described here rather than imported)."""

    async def refresh(self) -> None: ...

    async def reload(self) -> None: ...

    async def reset_usage(self, budget_ids: list[str], rate_limit_ids: list[str]) -> None: ...

    def counters(self) -> list[dict[str, Any]]: ...


class GovernanceServices(Protocol):
    """What these routes use of the running service (``web/services.py``)."""

    @property
    def engine(self) -> AsyncEngine: ...

    # ``None`` where no engine runs: these routes then read and write the database only.
    @property
    def admission(self) -> AdmissionEngine | None: ...


def _services(request: Request) -> GovernanceServices:
    services: GovernanceServices = request.app.services
    return services


def _engine(request: Request) -> AsyncEngine:
    return _services(request).engine


def _admission(request: Request) -> AdmissionEngine | None:
    """The admission engine, or ``None`` when none runs in this process."""
    return _services(request).admission


async def _meter(request: Request) -> UsageMeter | None:
    """Usage as every replica sees it (scaled out, read from Redis first)."""
    admission = _admission(request)
    if admission is not None:
        await admission.refresh()
    return admission


async def _changed(request: Request) -> None:
    """After a committed write: the running gateway applies it before we answer."""
    admission = _admission(request)
    if admission is not None:
        await admission.reload()


@dataclass(frozen=True, slots=True)
class _Entity:
    """One CRUD resource; ``crud_routes`` turns it into two routes (five operations)."""

    label: str  # "Virtual key": messages
    name: str  # "virtual_key": the envelope key
    path: str  # "virtual-keys"
    create_model: type[BaseModel]
    update_model: type[BaseModel]
    list_reply: type[BaseModel]
    one_reply: type[BaseModel]
    written_reply: type[BaseModel]
    create: Callable[..., Awaitable[Any]]
    get: Callable[..., Awaitable[Any]]
    list: Callable[..., Awaitable[list[Any]]]
    update: Callable[..., Awaitable[Any]]
    delete: Callable[..., Awaitable[None]]
    read: Callable[[Any, UsageMeter | None], BaseModel]
    query: type[Query] | None = None


def crud_routes(entity: _Entity) -> list[Resource]:
    plural, base, label = f"{entity.name}s", f"/governance/{entity.path}", entity.label

    async def list_all(request: Request) -> Response:
        filters = entity.query.parse(request.query_params) if entity.query else None
        async with _engine(request).connect() as conn:
            views = await entity.list(conn, **(filters.model_dump() if filters else {}))
        meter = await _meter(request)
        items = [entity.read(v, meter) for v in views]
        return JSONResponse(entity.list_reply(**{plural: items, "count": len(items)}))

    async def create(request: Request) -> Response:
        body = await read_model(request, entity.create_model)
        async with _engine(request).begin() as conn:
            view = await entity.create(conn, body)
        await _changed(request)
        item = entity.read(view, await _meter(request))
        reply = entity.written_reply(message=f"{label} created successfully", **{entity.name: item})
        return JSONResponse(reply, 201)

    async def get(request: Request) -> Response:
        async with _engine(request).connect() as conn:
            view = await entity.get(conn, request.path_params["id"])
        item = entity.read(view, await _meter(request))
        return JSONResponse(entity.one_reply(**{entity.name: item}))

    async def put(request: Request) -> Response:
        body = await read_model(request, entity.update_model)
        async with _engine(request).begin() as conn:
            view = await entity.update(conn, request.path_params["id"], body)
        await _changed(request)
        item = entity.read(view, await _meter(request))
        reply = entity.written_reply(message=f"{label} updated successfully", **{entity.name: item})
        return JSONResponse(reply)

    async def remove(request: Request) -> Response:
        async with _engine(request).begin() as conn:
            await entity.delete(conn, request.path_params["id"])
        await _changed(request)
        return JSONResponse(Message(message=f"{label} deleted successfully"))

    noun, plural_words = label.lower(), plural.replace("_", " ")
    return [
        Resource(
            base,
            {
                "GET": Operation(
                    list_all,
                    f"List {plural_words}, oldest first",
                    {200: Answer(entity.list_reply, "All of them")},
                    query=entity.query,
                ),
                "POST": Operation(
                    create,
                    f"Create a {noun}",
                    {201: Answer(entity.written_reply, f"{label} created successfully")},
                    body=entity.create_model,
                ),
            },
            name=plural,
        ),
        Resource(
            f"{base}/{{id}}",
            {
                "GET": Operation(
                    get,
                    f"Get a {noun}",
                    {200: Answer(entity.one_reply, "Found")},
                    errors=(404,),
                ),
                "PUT": Operation(
                    put,
                    f"Update a {noun} (merge: fields left out are unchanged)",
                    {200: Answer(entity.written_reply, f"{label} updated successfully")},
                    body=entity.update_model,
                    errors=(404,),
                ),
                "DELETE": Operation(
                    remove,
                    f"Delete a {noun}",
                    {200: Answer(Message, f"{label} deleted successfully")},
                    errors=(404,),
                ),
            },
            name=entity.name,
        ),
    ]


CUSTOMERS = _Entity(
    "Customer",
    "customer",
    "customers",
    CustomerCreate,
    CustomerUpdate,
    CustomerList,
    CustomerOne,
    CustomerWritten,
    service.create_customer,
    service.get_customer,
    service.list_customers,
    service.update_customer,
    service.delete_customer,
    customer_read,
)
TEAMS = _Entity(
    "Team",
    "team",
    "teams",
    TeamCreate,
    TeamUpdate,
    TeamList,
    TeamOne,
    TeamWritten,
    service.create_team,
    service.get_team,
    service.list_teams,
    service.update_team,
    service.delete_team,
    team_read,
    query=TeamsQuery,
)
VIRTUAL_KEYS = _Entity(
    "Virtual key",
    "virtual_key",
    "virtual-keys",
    VirtualKeyCreate,
    VirtualKeyUpdate,
    VirtualKeyList,
    VirtualKeyOne,
    VirtualKeyWritten,
    service.create_key,
    service.get_key,
    service.list_keys,
    service.update_key,
    service.delete_key,
    key_read,
    query=VirtualKeysQuery,
)


async def usage_stats(request: Request) -> Response:
    """Budget spend and rate-limit counters per key (one key with ``?virtual_key_id=``)."""
    key_id = UsageStatsQuery.parse(request.query_params).virtual_key_id
    meter = await _meter(request)
    async with _engine(request).connect() as conn:
        if key_id is not None:
            view = await service.get_key(conn, key_id)
            return JSONResponse(
                UsageStatsOne(virtual_key_id=key_id, usage_stats=key_usage(view, meter))
            )
        views = await service.list_keys(conn)
    return JSONResponse(UsageStatsAll(usage_stats=[key_usage(v, meter) for v in views]))


async def rotate_key(request: Request) -> Response:
    """A new secret for the key (returned once, in ``value``); the old one stops working."""
    async with _engine(request).begin() as conn:
        view = await service.rotate_key(conn, request.path_params["id"])
    await _changed(request)
    item = key_read(view, await _meter(request))
    return JSONResponse(
        VirtualKeyWritten(message="Virtual key rotated successfully", virtual_key=item)
    )


async def usage_reset(request: Request) -> Response:
    """Zero the counters of one key, team or customer (not its parents or children)."""
    body = await read_model(request, UsageReset)
    async with _engine(request).connect() as conn:
        budget_ids, rate_limit_ids = await service.usage_targets(
            conn,
            virtual_key_id=body.virtual_key_id,
            team_id=body.team_id,
            customer_id=body.customer_id,
        )
    admission = _admission(request)
    if admission is not None:
        await admission.reset_usage(budget_ids, rate_limit_ids)
    else:
        async with _engine(request).begin() as conn:
            await service.restart_windows(conn, budget_ids, rate_limit_ids)
    return JSONResponse(Message(message="Usage reset successfully"))


async def debug_stats(request: Request) -> Response:
    async with _engine(request).connect() as conn:
        counts = await service.database_counts(conn)
    admission = _admission(request)
    plugin = PluginStats(
        loaded=admission is not None,
        counters_count=len(admission.counters()) if admission is not None else 0,
    )
    database = DatabaseStats(**counts)
    return JSONResponse(
        DebugStats(plugin_stats=plugin, database_stats=database, timestamp=datetime.now(UTC))
    )


async def debug_counters(request: Request) -> Response:
    await _meter(request)
    admission = _admission(request)
    rows = admission.counters() if admission is not None else []
    counters = [CounterRead.model_validate(row) for row in rows]
    return JSONResponse(
        DebugCounters(counters=counters, count=len(counters), timestamp=datetime.now(UTC))
    )


async def debug_health(request: Request) -> Response:
    database: DatabaseHealthy | DatabaseUnhealthy
    try:
        async with asyncio.timeout(_HEALTH_TIMEOUT_S):
            await ping(_engine(request))
        database = DatabaseHealthy(status="healthy")
    except Exception:  # any failure means unhealthy; the probe must answer, not raise
        database = DatabaseUnhealthy(status="unhealthy", error="Database connection failed")
    health = Health(
        status=database.status, timestamp=datetime.now(UTC), checks=HealthChecks(database=database)
    )
    return JSONResponse(health, 200 if health.status == "healthy" else 503)


routes = [
    *crud_routes(CUSTOMERS),
    *crud_routes(TEAMS),
    *crud_routes(VIRTUAL_KEYS),
    Resource(
        "/governance/virtual-keys/{id}/rotate",
        {
            "POST": Operation(
                rotate_key,
                "Give a virtual key a new secret value (the old one stops working)",
                {200: Answer(VirtualKeyWritten, "Virtual key rotated successfully")},
                errors=(404,),
            )
        },
    ),
    Resource(
        "/governance/usage-stats",
        {
            "GET": Operation(
                usage_stats,
                "Budget spend and rate-limit counters per virtual key",
                {200: Answer(UsageStats, "Every key, or the one asked for")},
                query=UsageStatsQuery,
                errors=(404,),
            )
        },
    ),
    Resource(
        "/governance/usage-reset",
        {
            "POST": Operation(
                usage_reset,
                "Zero one key's, team's or customer's counters (a new window starts now)",
                {200: Answer(Message, "Usage reset successfully")},
                body=UsageReset,
                errors=(404,),
            )
        },
    ),
    Resource(
        "/governance/debug/stats",
        {
            "GET": Operation(
                debug_stats,
                "Counts of governance rows and admission-engine figures",
                {200: Answer(DebugStats, "Statistics")},
            )
        },
    ),
    Resource(
        "/governance/debug/counters",
        {
            "GET": Operation(
                debug_counters,
                "The admission engine's live counters",
                {200: Answer(DebugCounters, "Counters")},
            )
        },
    ),
    Resource(
        "/governance/debug/health",
        {
            "GET": Operation(
                debug_health,
                "Governance health (the database answers)",
                {200: Answer(Health, "Healthy"), 503: Answer(Health, "Unhealthy")},
            )
        },
    ),
]
