"""``/api/governance/*``: Bifrost-compatible CRUD of customers, teams and virtual keys,
usage counters and debug views; ``/api/openapi.json`` describes the admin API.

Handlers are thin: parse the body (``schemas``), run one service call in one transaction,
tell the admission engine (``app.state.admission``) to reload, shape the reply. When no
engine runs in the process, budgets show no spend and the stored window anchors.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tollhouse.db import ping
from tollhouse.governance import service
from tollhouse.governance.openapi import document
from tollhouse.governance.schemas import (
    CustomerCreate,
    CustomerUpdate,
    TeamCreate,
    TeamUpdate,
    UsageMeter,
    UsageReset,
    VirtualKeyCreate,
    VirtualKeyUpdate,
    customer_json,
    key_json,
    key_usage_json,
    number_json,
    parse_body,
    rfc3339,
    team_json,
)
from tollhouse.web.bodies import read_body

_HEALTH_TIMEOUT_S = 2.0


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return number_json(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def json_response(body: dict[str, Any], status: int = 200) -> Response:
    """An admin API answer: compact JSON, ``Decimal`` written digit for digit."""
    content = orjson.dumps(body, default=_default)
    return Response(content, status, media_type="application/json")


def _engine(request: Request) -> AsyncEngine:
    engine: AsyncEngine = request.app.state.engine
    return engine


def _governance(request: Request) -> Any:
    """The admission engine, or ``None`` when none runs in this process."""
    return getattr(request.app.state, "admission", None)


async def _meter(request: Request) -> UsageMeter | None:
    """Usage as every replica sees it (scaled out, read from Redis first)."""
    governance = _governance(request)
    if governance is not None:
        await governance.refresh()
    meter: UsageMeter | None = governance
    return meter


async def _changed(request: Request) -> None:
    """After a committed write: the running gateway applies it before we answer."""
    governance = _governance(request)
    if governance is not None:
        await governance.reload()


Endpoint = Callable[[Request], Awaitable[Response]]


def resource(path: str, handlers: Mapping[str, Endpoint], name: str | None = None) -> Route:
    """One route for every method ``path`` serves, dispatching on the method.

    Starlette answers a method no route of a path takes with the ``Allow`` of the first
    route that matched the path: with one route per method, a 405 (an ``OPTIONS`` among
    them) named one method of several. One route per path lists them all (``HEAD`` with
    ``GET``, answered by the ``GET`` handler)."""
    table = {method.upper(): handler for method, handler in handlers.items()}
    if "GET" in table:
        table.setdefault("HEAD", table["GET"])

    async def dispatch(request: Request) -> Response:
        return await table[request.method](request)

    return Route(path, dispatch, methods=list(table), name=name)


@dataclass(frozen=True, slots=True)
class _Entity:
    """One CRUD resource; ``crud_routes`` turns it into two routes (five operations)."""

    label: str  # "Virtual key": messages
    name: str  # "virtual_key": the envelope key
    path: str  # "virtual-keys"
    create_model: type[BaseModel]
    update_model: type[BaseModel]
    create: Callable[..., Awaitable[Any]]
    get: Callable[..., Awaitable[Any]]
    list: Callable[..., Awaitable[list[Any]]]
    update: Callable[..., Awaitable[Any]]
    delete: Callable[..., Awaitable[None]]
    to_json: Callable[[Any, UsageMeter | None], dict[str, Any]]
    filters: tuple[str, ...] = ()


def crud_routes(entity: _Entity) -> list[Route]:
    plural, base = f"{entity.name}s", f"/governance/{entity.path}"

    async def list_all(request: Request) -> Response:
        params = request.query_params
        filters = {name: params.get(name) or None for name in entity.filters}
        async with _engine(request).connect() as conn:
            views = await entity.list(conn, **filters)
        meter = await _meter(request)
        return json_response(
            {plural: [entity.to_json(v, meter) for v in views], "count": len(views)}
        )

    async def create(request: Request) -> Response:
        body = parse_body(entity.create_model, await read_body(request))
        async with _engine(request).begin() as conn:
            view = await entity.create(conn, body)
        await _changed(request)
        message = f"{entity.label} created successfully"
        return json_response(
            {"message": message, entity.name: entity.to_json(view, await _meter(request))}, 201
        )

    async def get(request: Request) -> Response:
        async with _engine(request).connect() as conn:
            view = await entity.get(conn, request.path_params["id"])
        return json_response({entity.name: entity.to_json(view, await _meter(request))})

    async def put(request: Request) -> Response:
        body = parse_body(entity.update_model, await read_body(request))
        async with _engine(request).begin() as conn:
            view = await entity.update(conn, request.path_params["id"], body)
        await _changed(request)
        message = f"{entity.label} updated successfully"
        return json_response(
            {"message": message, entity.name: entity.to_json(view, await _meter(request))}
        )

    async def remove(request: Request) -> Response:
        async with _engine(request).begin() as conn:
            await entity.delete(conn, request.path_params["id"])
        await _changed(request)
        return json_response({"message": f"{entity.label} deleted successfully"})

    return [
        resource(base, {"GET": list_all, "POST": create}, name=plural),
        resource(f"{base}/{{id}}", {"GET": get, "PUT": put, "DELETE": remove}, name=entity.name),
    ]


CUSTOMERS = _Entity(
    "Customer",
    "customer",
    "customers",
    CustomerCreate,
    CustomerUpdate,
    service.create_customer,
    service.get_customer,
    service.list_customers,
    service.update_customer,
    service.delete_customer,
    customer_json,
)
TEAMS = _Entity(
    "Team",
    "team",
    "teams",
    TeamCreate,
    TeamUpdate,
    service.create_team,
    service.get_team,
    service.list_teams,
    service.update_team,
    service.delete_team,
    team_json,
    filters=("customer_id",),
)
VIRTUAL_KEYS = _Entity(
    "Virtual key",
    "virtual_key",
    "virtual-keys",
    VirtualKeyCreate,
    VirtualKeyUpdate,
    service.create_key,
    service.get_key,
    service.list_keys,
    service.update_key,
    service.delete_key,
    key_json,
    filters=("team_id", "customer_id"),
)


async def usage_stats(request: Request) -> Response:
    """Budget spend and rate-limit counters per key (one key with ``?virtual_key_id=``)."""
    key_id = request.query_params.get("virtual_key_id") or None
    meter = await _meter(request)
    async with _engine(request).connect() as conn:
        if key_id is not None:
            view = await service.get_key(conn, key_id)
            return json_response(
                {"virtual_key_id": key_id, "usage_stats": key_usage_json(view, meter)}
            )
        views = await service.list_keys(conn)
    return json_response({"usage_stats": [key_usage_json(v, meter) for v in views]})


async def usage_reset(request: Request) -> Response:
    """Zero the counters of one key, team or customer (not its parents or children)."""
    body = parse_body(UsageReset, await read_body(request))
    async with _engine(request).connect() as conn:
        budget_ids, rate_limit_ids = await service.usage_targets(
            conn,
            virtual_key_id=body.virtual_key_id,
            team_id=body.team_id,
            customer_id=body.customer_id,
        )
    governance = _governance(request)
    if governance is not None:
        await governance.reset_usage(budget_ids, rate_limit_ids)
    else:
        async with _engine(request).begin() as conn:
            await service.restart_windows(conn, budget_ids, rate_limit_ids)
    return json_response({"message": "Usage reset successfully"})


def _timestamp() -> str | None:
    return rfc3339(datetime.now(UTC))


async def debug_stats(request: Request) -> Response:
    async with _engine(request).connect() as conn:
        counts = await service.database_counts(conn)
    governance = _governance(request)
    plugin = {
        "loaded": governance is not None,
        "counters_count": len(governance.counters()) if governance is not None else 0,
    }
    return json_response(
        {"plugin_stats": plugin, "database_stats": counts, "timestamp": _timestamp()}
    )


async def debug_counters(request: Request) -> Response:
    await _meter(request)
    governance = _governance(request)
    counters = list(governance.counters()) if governance is not None else []
    return json_response({"counters": counters, "count": len(counters), "timestamp": _timestamp()})


async def debug_health(request: Request) -> Response:
    try:
        async with asyncio.timeout(_HEALTH_TIMEOUT_S):
            await ping(_engine(request))
        database = {"status": "healthy"}
    except Exception:  # any failure means unhealthy; the probe must answer, not raise
        database = {"status": "unhealthy", "error": "Database connection failed"}
    status = database["status"]
    body = {"status": status, "timestamp": _timestamp(), "checks": {"database": database}}
    return json_response(body, 200 if status == "healthy" else 503)


async def openapi(request: Request) -> Response:
    return json_response(document())


routes = [
    *crud_routes(CUSTOMERS),
    *crud_routes(TEAMS),
    *crud_routes(VIRTUAL_KEYS),
    resource("/governance/usage-stats", {"GET": usage_stats}),
    resource("/governance/usage-reset", {"POST": usage_reset}),
    resource("/governance/debug/stats", {"GET": debug_stats}),
    resource("/governance/debug/counters", {"GET": debug_counters}),
    resource("/governance/debug/health", {"GET": debug_health}),
    resource("/openapi.json", {"GET": openapi}),
]
