"""Probes and metrics: ``/health``, ``/healthz``, ``/readyz``, ``/metrics``.

``/healthz`` is liveness (the process answers). ``/readyz`` is readiness (migrations
applied, ledger writer running, not draining for shutdown). ``/health`` checks the
dependencies themselves: the database and, when configured, Redis, each ``connected``,
``not_configured`` (Redis only) or ``error: <exception class>``. ``/health`` and
``/metrics`` answer whoever may use the admin API unless ``ops_public`` is set.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tollhouse.db import ping
from tollhouse.ops.metrics import Metrics
from tollhouse.web.responses import JSONResponse
from tollhouse.web.services import NotStarted

_CHECK_TIMEOUT_S = 2.0


class LedgerWriter(Protocol):
    """The usage recorder as the probes read it (``ledger`` imports ``ops``, not back)."""

    @property
    def pending(self) -> int: ...

    @property
    def degraded(self) -> bool: ...


class Pingable(Protocol):
    """The Redis client, when one is configured (the redis extra is optional)."""

    def ping(self) -> Awaitable[object]: ...


class OpsServices(Protocol):
    """What these routes use of the running service (``web/services.py``)."""

    @property
    def engine(self) -> AsyncEngine: ...

    @property
    def recorder(self) -> LedgerWriter: ...

    @property
    def redis(self) -> Pingable | None: ...

    @property
    def metrics(self) -> Metrics: ...

    @property
    def ready(self) -> bool: ...

    @property
    def draining(self) -> bool: ...


def _services(request: Request) -> OpsServices:
    services: OpsServices = request.app.services
    return services


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    try:
        services = _services(request)
    except NotStarted:
        return JSONResponse({"status": "starting"}, 503)
    if services.draining:
        return JSONResponse({"status": "draining"}, 503)
    if not services.ready:
        return JSONResponse({"status": "starting"}, 503)
    recorder = services.recorder
    if recorder.degraded:
        # Still serving (records wait on disk), so still ready: a load balancer must not
        # take every replica out because the database is away.
        return JSONResponse(
            {
                "status": "degraded",
                "reason": "database unavailable: usage records are spooled to disk",
                "usage_records_pending": recorder.pending,
            }
        )
    return JSONResponse({"status": "ready", "usage_records_pending": recorder.pending})


async def health(request: Request) -> Response:
    services = _services(request)
    checks: dict[str, str] = {}
    try:
        async with asyncio.timeout(_CHECK_TIMEOUT_S):
            await ping(services.engine)
        checks["database"] = "connected"
    except Exception as exc:  # any failure means unhealthy; the reason is reported
        checks["database"] = f"error: {type(exc).__name__}"
    redis = services.redis
    if redis is None:
        checks["redis"] = "not_configured"
    else:
        try:
            async with asyncio.timeout(_CHECK_TIMEOUT_S):
                await redis.ping()
            checks["redis"] = "connected"
        except Exception as exc:
            checks["redis"] = f"error: {type(exc).__name__}"
    healthy = all(v in ("connected", "not_configured") for v in checks.values())
    return JSONResponse({"status": "ok" if healthy else "error", **checks}, 200 if healthy else 503)


async def metrics(request: Request) -> Response:
    services = _services(request)
    services.metrics.ledger_pending.set(services.recorder.pending)
    return Response(services.metrics.render(), media_type="text/plain; version=0.0.4")


# Load balancers probe these without credentials; they tell nothing about the inside.
probe_routes = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
]
# These show dependencies, models, keys' traffic: admin-only unless ``ops_public``.
operator_endpoints = {"/health": health, "/metrics": metrics}
