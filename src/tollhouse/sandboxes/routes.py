"""The broker API tracks call (``/v1/allocate``, ``/v1/sandboxes/{id}…``, bearer broker
token and ``X-Track-ID``) and its admin API (``/api/sandboxes…``,
``/api/broker-tokens``, the admin key); docs/sandboxes.md.

Track-side answers carry security headers and, for the origins ``sandbox_cors_origins``
lists, CORS (``web/hygiene.py``); their errors are OpenAI-shaped like every ``/v1``
error. A lease is 201 with ``Location``, the track's own lease again 200, an empty pool
503 ``pool_exhausted`` with ``Retry-After``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.convertors import Convertor, register_url_convertor
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, request_response

from tollhouse.config import Settings
from tollhouse.errors import NotOwner, ValidationFailed
from tollhouse.sandboxes import pool, tokens
from tollhouse.sandboxes.broker import Broker
from tollhouse.sandboxes.schemas import (
    AllocateBody,
    LeaseRead,
    ReportRead,
    SandboxesQuery,
    SandboxOne,
    SandboxPage,
    SandboxRead,
    SandboxView,
    SeedBody,
    Seeded,
    StaticCreate,
    StatsRead,
    TokenCreate,
    TokenList,
    TokenOne,
    TokenRead,
    TokenWritten,
    idempotency_key,
    track_id,
)
from tollhouse.sandboxes.service import Pool
from tollhouse.web.bodies import read_body
from tollhouse.web.hygiene import Hygiene, origins
from tollhouse.web.responses import JSONResponse
from tollhouse.web.routing import Answer, Operation, Resource
from tollhouse.web.validation import read_model


class SandboxId(Convertor[str]):
    """``sbx_…``: so that ``/sandboxes/stats`` (and ``seed``, ``sync``…) is never read as
    the id of a sandbox, and ``GET /sandboxes/seed`` is a 405, not "sandbox not found"."""

    regex = "sbx_[^/]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("sandbox_id", SandboxId())


class Admission(Protocol):
    async def reload(self) -> None: ...


class SandboxServices(Protocol):
    """What these routes use of the running service (``web/services.py``)."""

    @property
    def settings(self) -> Settings: ...

    @property
    def engine(self) -> AsyncEngine: ...

    @property
    def broker(self) -> Broker: ...

    @property
    def sandboxes(self) -> Pool: ...

    @property
    def admission(self) -> Admission: ...


def _services(request: Request) -> SandboxServices:
    services: SandboxServices = request.app.services
    return services


# -- the track side ------------------------------------------------------------------------


async def allocate(request: Request) -> Response:
    services = _services(request)
    broker = services.broker
    token = broker.authenticate(request.headers.get("authorization"))
    track = track_id(request.headers.get("x-track-id"))
    await broker.limit(track)
    key = idempotency_key(request.headers.get("idempotency-key"))
    body = await read_model(request, AllocateBody) if await read_body(request) else None
    hours = body.lab_duration_hours if body is not None else None
    longest = services.settings.sandbox_max_lab_hours
    if hours is not None and hours > longest:
        raise ValidationFailed(
            f"lab_duration_hours: at most {longest:g}", param="lab_duration_hours"
        )
    leased = await broker.allocate(token, track, hours, key)
    reply = LeaseRead(
        sandbox=SandboxRead.from_row(leased.row),
        credentials=services.sandboxes.credentials(leased.row),
        created=leased.created,
    )
    if leased.created:
        return JSONResponse(reply, 201, {"location": f"/v1/sandboxes/{leased.row.id}"})
    return JSONResponse(reply)


async def get_sandbox(request: Request) -> Response:
    """The track's own sandbox (leased, or marked and not yet deleted); another track's
    is a 403, so that no track can read where another's lab is or who holds it."""
    services = _services(request)
    services.broker.authenticate(request.headers.get("authorization"))
    track = track_id(request.headers.get("x-track-id"))
    await services.broker.limit(track)
    row = await pool.read(services.engine, request.path_params["id"])
    if row.track_id != track:
        raise NotOwner(f"sandbox {row.id!r} is not leased to track {track!r}")
    live = row.status == "allocated"
    credentials = services.sandboxes.credentials(row) if live else None
    return JSONResponse(SandboxView(sandbox=SandboxRead.from_row(row), credentials=credentials))


async def mark_for_deletion(request: Request) -> Response:
    services = _services(request)
    services.broker.authenticate(request.headers.get("authorization"))
    track = track_id(request.headers.get("x-track-id"))
    await services.broker.limit(track)
    row = await pool.end_lease(services.engine, request.path_params["id"], track, datetime.now(UTC))
    return JSONResponse(SandboxOne(sandbox=SandboxRead.from_row(row)))


def track_routes(settings: Settings) -> list[BaseRoute]:
    allowed = origins(settings.sandbox_cors_origins)

    def route(path: str, endpoint: Any, method: str) -> Route:
        wrapped = Hygiene(request_response(endpoint), allowed, f"{method}, OPTIONS")
        return Route(path, wrapped, methods=[method, "OPTIONS"])

    return [
        route("/v1/allocate", allocate, "POST"),
        route("/v1/sandboxes/{id:sandbox_id}/mark-for-deletion", mark_for_deletion, "POST"),
        route("/v1/sandboxes/{id:sandbox_id}", get_sandbox, "GET"),
    ]


# -- the admin side ------------------------------------------------------------------------


async def list_sandboxes(request: Request) -> Response:
    q = SandboxesQuery.parse(request.query_params)
    async with _services(request).engine.connect() as conn:
        rows, cursor = await pool.page(
            conn,
            status=q.status,
            backend=q.backend,
            track_id=q.track_id,
            limit=q.limit,
            cursor=q.cursor,
        )
    items = [SandboxRead.from_row(row) for row in rows]
    return JSONResponse(SandboxPage(sandboxes=items, count=len(items), next_cursor=cursor))


async def register(request: Request) -> Response:
    body = await read_model(request, StaticCreate)
    row = await _services(request).sandboxes.register(
        body.name, body.url, body.external_id, body.credentials
    )
    return JSONResponse(SandboxOne(sandbox=SandboxRead.from_row(row)), 201)


async def seed(request: Request) -> Response:
    body = await read_model(request, SeedBody)
    made = await _services(request).sandboxes.seed(body.count)
    return JSONResponse(Seeded(created=made, count=len(made)), 201)


async def stats(request: Request) -> Response:
    return JSONResponse(StatsRead.model_validate(await _services(request).sandboxes.stats()))


async def sync(request: Request) -> Response:
    report = await _services(request).sandboxes.sync()
    return JSONResponse(ReportRead.model_validate(report, from_attributes=True))


async def cleanup(request: Request) -> Response:
    report = await _services(request).sandboxes.cleanup()
    return JSONResponse(ReportRead.model_validate(report, from_attributes=True))


async def auto_expire(request: Request) -> Response:
    expired = await _services(request).sandboxes.auto_expire()
    return JSONResponse(ReportRead.model_validate({**_NOTHING, "expired": expired}))


_NOTHING = dict.fromkeys(ReportRead.model_fields, 0)


async def get_one(request: Request) -> Response:
    async with _services(request).engine.connect() as conn:
        row = await pool.get(conn, request.path_params["id"])
    return JSONResponse(SandboxOne(sandbox=SandboxRead.from_row(row)))


async def end_lease(request: Request) -> Response:
    async with _services(request).engine.begin() as conn:
        row = await pool.mark_for_deletion(conn, request.path_params["id"], None, datetime.now(UTC))
    return JSONResponse(SandboxOne(sandbox=SandboxRead.from_row(row)))


async def list_tokens(request: Request) -> Response:
    async with _services(request).engine.connect() as conn:
        rows = await tokens.listing(conn)
    items = [TokenRead.from_row(row) for row in rows]
    return JSONResponse(TokenList(tokens=items, count=len(items)))


async def create_token(request: Request) -> Response:
    body = await read_model(request, TokenCreate)
    services = _services(request)
    async with services.engine.begin() as conn:
        row, value = await tokens.create(conn, body.name, body.tags, datetime.now(UTC))
    await services.admission.reload()
    return JSONResponse(TokenWritten(token=TokenRead.from_row(row), value=value), 201)


async def revoke_token(request: Request) -> Response:
    services = _services(request)
    async with services.engine.begin() as conn:
        row = await tokens.revoke(conn, request.path_params["id"], datetime.now(UTC))
    await services.admission.reload()
    return JSONResponse(TokenOne(token=TokenRead.from_row(row)))


def _op(handler: Any, summary: str, answers: dict[int, Answer], **more: Any) -> Operation:
    return Operation(handler, summary, answers, tag="sandboxes", **more)


_REPORT = {200: Answer(ReportRead, "What the pass did")}

# Mounted under ``/api`` behind the admin key; fixed paths before ``/sandboxes/{id}``.
routes = [
    Resource(
        "/sandboxes",
        {
            "GET": _op(
                list_sandboxes,
                "The pool, oldest first",
                {200: Answer(SandboxPage, "One page")},
                query=SandboxesQuery,
            ),
            "POST": _op(
                register,
                "Register a static sandbox (an environment the operator runs)",
                {201: Answer(SandboxOne, "Registered, available")},
                body=StaticCreate,
                errors=(409,),
            ),
        },
    ),
    Resource(
        "/sandboxes/seed",
        {
            "POST": _op(
                seed,
                "Create local sandboxes, each with its work directory",
                {201: Answer(Seeded, "Created, available")},
                body=SeedBody,
            )
        },
    ),
    Resource(
        "/sandboxes/stats",
        {"GET": _op(stats, "The pool by status and backend", {200: Answer(StatsRead, "Now")})},
    ),
    Resource(
        "/sandboxes/sync",
        {"POST": _op(sync, "Reconcile the pool with its backends; refill to target", _REPORT)},
    ),
    Resource(
        "/sandboxes/cleanup",
        {"POST": _op(cleanup, "Delete (or recycle) what is marked for deletion", _REPORT)},
    ),
    Resource(
        "/sandboxes/auto-expire",
        {"POST": _op(auto_expire, "End the leases past their expiry", _REPORT)},
    ),
    Resource(
        "/sandboxes/{id:sandbox_id}",
        {"GET": _op(get_one, "One sandbox", {200: Answer(SandboxOne, "Found")}, errors=(404,))},
    ),
    Resource(
        "/sandboxes/{id:sandbox_id}/mark-for-deletion",
        {
            "POST": _op(
                end_lease,
                "End its lease (or take it out of the pool) now",
                {200: Answer(SandboxOne, "Marked")},
                errors=(404,),
            )
        },
    ),
    Resource(
        "/broker-tokens",
        {
            "GET": _op(list_tokens, "Broker tokens", {200: Answer(TokenList, "All of them")}),
            "POST": _op(
                create_token,
                "Create a broker token (its value is shown once)",
                {201: Answer(TokenWritten, "Created")},
                body=TokenCreate,
                errors=(409,),
            ),
        },
    ),
    Resource(
        "/broker-tokens/{id}",
        {
            "DELETE": _op(
                revoke_token,
                "Revoke a broker token",
                {200: Answer(TokenOne, "Revoked")},
                errors=(404,),
            )
        },
    ),
]
