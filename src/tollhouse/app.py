"""``create_app(settings)``: the ASGI application. Wiring only; logic lives in services."""

from __future__ import annotations

import contextlib
import gc
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route, Router, request_response
from starlette.types import ASGIApp, Receive, Scope, Send

from tollhouse.admin.auth import FailureThrottle, require_admin
from tollhouse.admin.routes import routes as admin_routes
from tollhouse.admin.routes import webhook_routes
from tollhouse.admission import Admission, LedgerTotals, MemoryMeter, Meter
from tollhouse.agents.cache import SessionCache
from tollhouse.agents.feed import LISTENED, SessionFeed, SessionListener
from tollhouse.agents.outbox import Redrive
from tollhouse.agents.routes import routes as session_routes
from tollhouse.agents.setup import ROLES, start_workers
from tollhouse.alerts.dispatcher import Dispatcher
from tollhouse.alerts.service import AlertService
from tollhouse.bus.backends import EventBus
from tollhouse.bus.setup import bus_from_settings
from tollhouse.catalog import listing
from tollhouse.catalog.routes import routes as catalog_routes
from tollhouse.catalog.service import Listing
from tollhouse.config import Settings
from tollhouse.credits import autotopup
from tollhouse.credits.posting import UsagePosts
from tollhouse.credits.routes import key_routes as credit_key_routes
from tollhouse.credits.watch import BalanceWatch
from tollhouse.credits.worker import CreditSweeper
from tollhouse.crypto import SecretBox
from tollhouse.dashboard.access import Sessions
from tollhouse.dashboard.render import error_page
from tollhouse.dashboard.routes import routes as dashboard_routes
from tollhouse.db import create_engine
from tollhouse.db.schema import upgrade
from tollhouse.errors import (
    BadRequest,
    MethodNotAllowed,
    NotFound,
    TollhouseError,
    admin_body,
    anthropic_body,
    openai_body,
)
from tollhouse.gateway.routes import routes as gateway_routes
from tollhouse.gateway.routing import Router as ModelRouter
from tollhouse.gateway.service import Gateway
from tollhouse.gateway.upstreams import Upstream
from tollhouse.ledger import UsageRecorder
from tollhouse.ledger.spool import Spool
from tollhouse.ops.metrics import Metrics
from tollhouse.ops.routes import operator_endpoints, probe_routes
from tollhouse.policies.gate import PolicyGate
from tollhouse.policies.setup import opa_session, policy_engines
from tollhouse.pricing import load_catalog
from tollhouse.pricing.catalog import Catalog
from tollhouse.sandboxes.broker import Broker
from tollhouse.sandboxes.limits import TrackLimiter
from tollhouse.sandboxes.routes import track_routes
from tollhouse.sandboxes.service import Pool
from tollhouse.web.guard import EdgeGuard, body_unread
from tollhouse.web.responses import JSONResponse
from tollhouse.web.services import NotStarted
from tollhouse.windows import zone

if TYPE_CHECKING:
    from redis.asyncio import Redis  # the optional redis extra

    from tollhouse.agents.routes import AgentServices
    from tollhouse.agents.stream import StreamServices
    from tollhouse.alerts.routes import AlertServices
    from tollhouse.catalog.routes import CatalogServices
    from tollhouse.credits.routes import CreditServices
    from tollhouse.dashboard.pages import DashboardServices
    from tollhouse.gateway.routes import GatewayServices
    from tollhouse.governance.routes import GovernanceServices
    from tollhouse.ledger.routes import LedgerServices
    from tollhouse.ops.routes import OpsServices
    from tollhouse.policies.routes import PolicyServices
    from tollhouse.sandboxes.routes import SandboxServices
    from tollhouse.web.bodies import BodyLimits

log = logging.getLogger("tollhouse")


@dataclass(slots=True, eq=False)
class Services:
    """Every resource of the running service, each with its type (``web/services.py``
    says how routes reach them). Built once the lifespan has started all of them, so
    none is ``None`` for want of having started."""

    settings: Settings
    auth_throttle: FailureThrottle
    metrics: Metrics
    catalog: Catalog
    catalog_listing: Listing  # what /catalog/* answers, worked out once
    engine: AsyncEngine
    recorder: UsageRecorder
    redis: Redis | None  # None unless ``redis_url`` is set
    alerts: AlertService
    secret_box: SecretBox | None  # None unless ``secret_key`` is set
    dispatcher: Dispatcher
    admission: Admission
    policies: PolicyGate
    broker: Broker
    sandboxes: Pool
    bus: EventBus
    session_feed: SessionFeed
    session_cache: SessionCache  # empty without ``redis_url`` or with a TTL of 0
    gateway: Gateway
    credit_sweeper: CreditSweeper
    balance_watch: BalanceWatch
    dashboard_sessions: Sessions
    # For ``/readyz``: ready once start-up is done; draining from the shutdown signal on.
    ready: bool = False
    draining: bool = False


if TYPE_CHECKING:

    def _serves_every_route(services: Services) -> None:
        """Never called: each assignment is mypy's proof that ``Services`` gives a routes
        module what its Protocol asks for (a missing or mistyped field is an error here,
        not an ``AttributeError`` on a request)."""
        _gateway: GatewayServices = services
        _ops: OpsServices = services
        _governance: GovernanceServices = services
        _credits: CreditServices = services
        _catalog: CatalogServices = services
        _alerts: AlertServices = services
        _ledger: LedgerServices = services
        _policies: PolicyServices = services
        _sandboxes: SandboxServices = services
        _agents: AgentServices = services
        _streams: StreamServices = services
        _bodies: BodyLimits = services
        _dashboard: DashboardServices = services


class Tollhouse(Starlette):
    """The ASGI app, holding its ``Services`` once the lifespan has started them.

    An attribute of the app rather than of ``app.state``: a ``State`` read goes through
    ``__getattr__`` after a failed lookup, several times slower, on every request."""

    _services: Services | None = None

    @property
    def services(self) -> Services:
        if self._services is None:
            raise NotStarted("the app has not started: its lifespan builds its services")
        return self._services

    @services.setter
    def services(self, services: Services) -> None:
        self._services = services


def error_response(request: Request, exc: TollhouseError) -> Response:
    """The one place an error becomes a response; the body shape follows the path."""
    path = request.url.path
    if path == "/ui" or path.startswith("/ui/"):
        return error_page(request, exc)
    # The catalog is described by the admin API's document, so it refuses in its shape.
    if path.startswith(("/api/", "/catalog/")):
        body = admin_body(exc)
    elif path.startswith("/v1/messages"):
        body = anthropic_body(exc)
    else:
        body = openai_body(exc)
    headers = dict(exc.headers)
    request_id = getattr(request.state, "request_id", None)
    if request_id:
        headers["x-request-id"] = request_id
    if body_unread(request.scope):
        # Refused before its body was read (401, 413…): close rather than read the rest.
        headers["connection"] = "close"
    return JSONResponse(body, exc.status_code, headers)


async def _tollhouse_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, TollhouseError)
    return error_response(request, exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        error: TollhouseError = NotFound(f"no route for {request.method} {request.url.path}")
    elif exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        error = MethodNotAllowed(
            f"{request.method} is not allowed on {request.url.path} (allowed: {allowed})",
            headers=dict(exc.headers or {}),
        )
    else:
        error = BadRequest(str(exc.detail))
    return error_response(request, error)


async def _client_gone(request: Request, exc: Exception) -> Response:
    # Nobody is left to read this; answering keeps it out of the error log.
    return error_response(request, BadRequest("the client closed the connection"))


async def _server_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error", extra={"path": request.url.path})
    return error_response(request, TollhouseError("internal error; the server logged the cause"))


class _AdminGate:
    """Admin-authenticated before the wrapped app runs (``/api/*``, operator endpoints)."""

    def __init__(self, settings: Settings, throttle: FailureThrottle, app: ASGIApp) -> None:
        self._settings = settings
        self._throttle = throttle
        self._app = app

    @property
    def routes(self) -> list[BaseRoute]:
        """The gated routes, for ``Mount.routes`` (route listings, ``url_path_for``)."""
        routes: list[BaseRoute] = getattr(self._app, "routes", [])
        return routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            request = Request(scope, receive)
            try:
                require_admin(request, self._settings, self._throttle)
            except TollhouseError as exc:
                await error_response(request, exc)(scope, receive, send)
                return
        await self._app(scope, receive, send)


class _OnlyAllows:
    """Any method a path's routes above do not take: 405 naming those they do.

    For a path inside a mount that also matches it (``/api/webhooks/budget`` under
    ``/api``): Starlette prefers the mount's full match to the route's method-only
    match, so ``PUT`` there would answer the mount's 404 instead of a 405."""

    def __init__(self, *methods: str) -> None:
        self._allow = ", ".join(methods)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raise HTTPException(405, headers={"Allow": self._allow})


def _ops_routes(settings: Settings, throttle: FailureThrottle) -> list[Route]:
    routes = list(probe_routes)
    for path, endpoint in operator_endpoints.items():
        if settings.ops_public:
            routes.append(Route(path, endpoint, methods=["GET"]))
        else:
            gated = _AdminGate(settings, throttle, request_response(endpoint))
            routes.append(Route(path, gated, methods=["GET"]))
    return routes


def create_app(settings: Settings) -> Tollhouse:
    """Build the service for ``settings``; resources open in the lifespan."""
    catalog = load_catalog()
    metrics = Metrics()
    throttle = FailureThrottle(settings.admin_failures_per_minute)
    admin = _AdminGate(settings, throttle, Router(routes=admin_routes))

    @contextlib.asynccontextmanager
    async def lifespan(app: Tollhouse) -> AsyncIterator[None]:
        # Each resource registers its stop as soon as it has started, so a start-up that
        # fails half-way stops what it had started (in reverse order) instead of leaking
        # it; shutdown is the same unwinding.
        async with contextlib.AsyncExitStack() as stack:
            services = await _start(settings, throttle, catalog, metrics, stack)
            # Everything allocated so far lives as long as the process: keep the cyclic
            # GC from walking it again on every full collection (a latency-tail source).
            gc.collect()
            gc.freeze()
            app.services = services
            services.ready = True
            try:
                yield
            finally:
                services.ready, services.draining = False, True

    return Tollhouse(
        routes=[
            *gateway_routes,
            *credit_key_routes,
            *track_routes(settings),
            *session_routes,
            *_ops_routes(settings, throttle),
            *catalog_routes,
            *(dashboard_routes() if settings.dashboard_enabled else []),
            # Signed by its sender instead of the admin key, so outside the admin mount.
            *webhook_routes,
            Route("/api/webhooks/budget", _OnlyAllows("POST")),
            Route("/api/webhooks/stripe", _OnlyAllows("POST")),
            Mount("/api", app=admin),
        ],
        lifespan=lifespan,
        middleware=[
            Middleware(
                EdgeGuard, max_body_bytes=settings.max_request_body_bytes, respond=error_response
            )
        ],
        exception_handlers={
            TollhouseError: _tollhouse_error,
            HTTPException: _http_error,
            ClientDisconnect: _client_gone,
            Exception: _server_error,
        },
    )


@contextlib.asynccontextmanager
async def services_running(
    settings: Settings, listen: tuple[str, ...] = LISTENED
) -> AsyncIterator[Services]:
    """Every resource of the service started, without serving HTTP (``tollhouse worker``
    runs its agent workers on them); stopped on exit. ``listen``: the topics whose
    events wake this process's session feed (a worker with no streams needs fewer)."""
    throttle = FailureThrottle(settings.admin_failures_per_minute)
    async with contextlib.AsyncExitStack() as stack:
        services = await _start(settings, throttle, load_catalog(), Metrics(), stack, listen)
        services.ready = True
        yield services


async def _start(
    settings: Settings,
    throttle: FailureThrottle,
    catalog: Catalog,
    metrics: Metrics,
    stack: contextlib.AsyncExitStack,
    listen: tuple[str, ...] = LISTENED,
) -> Services:
    """Start every resource of the service, each stop on ``stack``."""
    engine = create_engine(settings)
    stack.push_async_callback(engine.dispose)
    if settings.auto_migrate:
        await upgrade(engine)
    # Balance alerts and auto top-ups: told of each batch of posts once it commits.
    watch = BalanceWatch(
        engine, settings.credits_sweep_interval_s, gap_s=settings.credits_watch_gap_s
    )
    recorder = UsageRecorder(
        engine,
        metrics,
        batch_size=settings.ledger_batch_size,
        flush_interval_ms=settings.ledger_flush_interval_ms,
        spool=Spool(Path(settings.spool_dir)),
        companion=UsagePosts(),  # credit posts commit with their usage records
        on_written=watch.posted,
    )
    await recorder.start()
    stack.push_async_callback(_stopped, recorder, settings.shutdown_timeout_s)
    redis = _redis_client(settings)
    if redis is not None:
        stack.push_async_callback(redis.aclose)
    alerts = AlertService(engine)
    await alerts.start()
    stack.push_async_callback(alerts.stop, settings.shutdown_timeout_s)
    secret = settings.secret_key.get_secret_value() if settings.secret_key else None
    secret_box = SecretBox.from_setting(secret)
    dispatcher = Dispatcher(engine, settings, secret_box, wake=alerts.on_written)
    if settings.alert_dispatch_in_process:
        await dispatcher.start()
        stack.push_async_callback(dispatcher.stop)
    meter = _meter(settings, LedgerTotals(engine, recorder), redis, metrics)
    regions = {name: cfg.region for name, cfg in settings.providers.items()}
    session = opa_session(settings)
    if session is not None:
        stack.push_async_callback(session.close)
    engines = policy_engines(settings, session)
    policies = PolicyGate(
        engine,
        engines,
        metrics,
        regions,
        log_allows=settings.policy_log_allows,
        zone=zone(settings.policy_time_zone),
    )
    await policies.start()
    stack.push_async_callback(policies.stop, settings.shutdown_timeout_s)
    bus = bus_from_settings(settings)
    await bus.start()
    stack.push_async_callback(bus.close)
    feed = SessionFeed()
    listener = SessionListener(bus, feed, listen)
    await listener.start()
    stack.push_async_callback(listener.stop)
    redrive = Redrive(engine, bus, settings.session_outbox_interval_s)  # the sessions' outbox
    await redrive.start()
    stack.push_async_callback(redrive.stop)
    sandboxes = Pool(engine, settings, metrics, secret_box)
    limiter = TrackLimiter(settings.sandbox_track_requests_per_minute, redis)
    broker = Broker(engine, settings, metrics, policies, limiter, sandboxes)
    admission = Admission(
        settings, engine, meter, alerts=alerts, also_load=[policies.reload, broker.reload]
    )
    await admission.start()
    stack.push_async_callback(admission.stop)
    await sandboxes.start()
    stack.push_async_callback(sandboxes.stop, settings.shutdown_timeout_s)
    sweeper = CreditSweeper(engine, settings.credits_sweep_interval_s, admission.reload)
    await sweeper.start()
    stack.push_async_callback(sweeper.stop)
    charging = await autotopup.start(settings, engine)
    if charging is not None:
        stack.push_async_callback(charging[1])  # closes the Stripe client, after the watch
    await watch.start(
        live=admission.credit_usage,
        sink=alerts,
        topups=charging[0] if charging is not None else None,
        on_change=admission.reload,
        notify=alerts.wake,
    )
    stack.push_async_callback(watch.stop)
    upstreams = {name: Upstream(name, cfg, settings) for name, cfg in settings.providers.items()}
    for upstream in upstreams.values():
        await upstream.start()
        stack.push_async_callback(upstream.close)
    router = ModelRouter(settings, catalog)
    gateway = Gateway(settings, router, upstreams, recorder, metrics, admission, policies)
    services = Services(
        settings=settings,
        auth_throttle=throttle,
        metrics=metrics,
        catalog=catalog,
        catalog_listing=listing(settings, catalog),
        engine=engine,
        recorder=recorder,
        redis=redis,
        alerts=alerts,
        secret_box=secret_box,
        dispatcher=dispatcher,
        admission=admission,
        policies=policies,
        broker=broker,
        sandboxes=sandboxes,
        bus=bus,
        session_feed=feed,
        session_cache=SessionCache(redis, settings.session_cache_ttl_s),
        gateway=gateway,
        credit_sweeper=sweeper,
        balance_watch=watch,
        dashboard_sessions=Sessions(settings),
    )
    if settings.agent_worker_in_process:
        await start_workers(services, ROLES, stack)
    return services


async def _stopped(recorder: UsageRecorder, timeout_s: float) -> None:
    await recorder.stop(timeout_s=timeout_s)
    log.info("stopped", extra={"usage_records_written": recorder.written})


def _meter(
    settings: Settings, ledger: LedgerTotals, redis: Redis | None, metrics: Metrics
) -> Meter[Any]:
    """The admission strategy, chosen once: counters in Redis when ``redis_url`` is set
    (every replica shares them), else in this process."""
    ttl_s = settings.request_timeout_s + 60  # reservations outlive any request
    if redis is None:
        return MemoryMeter(ledger, ttl_s)
    from tollhouse.admission.redis import RedisMeter  # the optional redis extra

    return RedisMeter(redis, ledger, ttl_s=ttl_s, metrics=metrics)


def _redis_client(settings: Settings) -> Redis | None:
    if not settings.redis_url:
        return None
    try:
        import redis.asyncio as redis
    except ImportError:
        from tollhouse.errors import ConfigError

        raise ConfigError(
            "redis_url is set but the redis client is not installed: pip install 'tollhouse[redis]'"
        ) from None
    # Retries are the meter's (``admission/functions.py``), which knows its calls are
    # idempotent. A blocking pool: past its size, a request waits (up to the timeout) for
    # a connection instead of failing with "Too many connections".
    pool = redis.BlockingConnectionPool.from_url(
        settings.redis_url,
        max_connections=settings.redis_max_connections,
        timeout=settings.redis_timeout_s,
        socket_timeout=settings.redis_timeout_s,
        socket_connect_timeout=settings.redis_timeout_s,
        health_check_interval=30,
    )
    return redis.Redis.from_pool(pool)  # the client owns the pool: aclose() closes it
