"""``/api/notification-channels``, ``/api/alerts``: channels, alert history, deliveries;
and ``POST /api/webhooks/budget``, budget events signed by other meters.

Same style as the governance API: 201 on create with the entity wrapped
(``{"notification_channel": {...}}``), lists with ``count``, merge updates, 400 naming
the field, 404 for unknown ids. Handlers parse, call one service function with a
connection (``service``, ``inbound``) and shape the reply (``schemas``).
"""

from __future__ import annotations

from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request
from starlette.responses import Response

from tollhouse.alerts import history, inbound, service
from tollhouse.alerts.schemas import (
    AlertList,
    AlertRead,
    AlertsQuery,
    ChannelCreate,
    ChannelDeleted,
    ChannelList,
    ChannelOne,
    ChannelRead,
    ChannelUpdate,
    ChannelWritten,
    DeliveryList,
    DeliveryRead,
    SendResult,
    WebhookDuplicate,
    WebhookReceipt,
    WebhookStored,
)
from tollhouse.alerts.service import AlertService
from tollhouse.alerts.signing import HEADER, SignatureError, check, parse_header
from tollhouse.config import Settings
from tollhouse.crypto import SecretBox
from tollhouse.errors import ServiceUnavailable, SignatureInvalid
from tollhouse.web.bodies import max_depth, read_body
from tollhouse.web.responses import JSONResponse
from tollhouse.web.routing import Answer, Operation, Resource, client_address
from tollhouse.web.services import FailureCounter
from tollhouse.web.validation import read_model


class AlertServices(Protocol):
    """What these routes use of the running service (``web/services.py``)."""

    @property
    def settings(self) -> Settings: ...

    @property
    def engine(self) -> AsyncEngine: ...

    @property
    def secret_box(self) -> SecretBox | None: ...

    @property
    def alerts(self) -> AlertService: ...

    @property
    def auth_throttle(self) -> FailureCounter: ...


def _services(request: Request) -> AlertServices:
    services: AlertServices = request.app.services
    return services


async def _seal_legacy(services: AlertServices) -> None:
    """Encrypt URLs an older version stored in plaintext, when the key is at hand."""
    if services.secret_box is not None:
        async with services.engine.begin() as conn:
            await service.seal_legacy(conn, services.secret_box)


async def list_channels(request: Request) -> Response:
    services = _services(request)
    await _seal_legacy(services)
    async with services.engine.connect() as conn:
        rows = await service.list_channels(conn)
    items = [ChannelRead.from_row(row) for row in rows]
    return JSONResponse(ChannelList(notification_channels=items, count=len(items)))


async def create_channel(request: Request) -> Response:
    body = await read_model(request, ChannelCreate)
    services = _services(request)
    async with services.engine.begin() as conn:
        row = await service.create_channel(conn, body, services.secret_box)
    message = "Notification channel created successfully"
    reply = ChannelWritten(message=message, notification_channel=ChannelRead.from_row(row))
    return JSONResponse(reply, 201)


async def get_channel(request: Request) -> Response:
    services = _services(request)
    await _seal_legacy(services)
    async with services.engine.connect() as conn:
        row = await service.get_channel(conn, request.path_params["id"])
    return JSONResponse(ChannelOne(notification_channel=ChannelRead.from_row(row)))


async def update_channel(request: Request) -> Response:
    body = await read_model(request, ChannelUpdate)
    services = _services(request)
    async with services.engine.begin() as conn:
        row = await service.update_channel(
            conn, request.path_params["id"], body, services.secret_box
        )
    message = "Notification channel updated successfully"
    reply = ChannelWritten(message=message, notification_channel=ChannelRead.from_row(row))
    return JSONResponse(reply)


async def delete_channel(request: Request) -> Response:
    async with _services(request).engine.begin() as conn:
        await service.delete_channel(conn, request.path_params["id"])
    return JSONResponse(ChannelDeleted(message="Notification channel deleted successfully"))


async def send_test(request: Request) -> Response:
    """Send a sample event through the channel now; answers what happened."""
    services = _services(request)
    async with services.engine.connect() as conn:
        row = await service.get_channel(conn, request.path_params["id"])
    outcome = await service.send_test(
        row, services.secret_box, services.settings.alert_send_timeout_s
    )
    return JSONResponse(
        SendResult(
            ok=outcome.ok,
            status_code=outcome.status_code,
            error=outcome.error,
            preview=outcome.preview,
        )
    )


async def list_alerts(request: Request) -> Response:
    q = AlertsQuery.parse(request.query_params)
    where = history.AlertFilter(q.event, q.level, q.scope_kind, q.scope_id)
    async with _services(request).engine.connect() as conn:
        rows, cursor = await history.list_events(conn, where, q.limit, q.cursor)
        total = await history.count_events(conn, where)
    items = [AlertRead.from_row(row) for row in rows]
    reply = AlertList(alerts=items, count=len(items), total=total, next_cursor=cursor)
    return JSONResponse(reply)


async def list_deliveries(request: Request) -> Response:
    async with _services(request).engine.connect() as conn:
        found = await history.list_deliveries(conn, request.path_params["id"])
    items = [DeliveryRead.from_rows(row, attempts) for row, attempts in found]
    return JSONResponse(DeliveryList(deliveries=items, count=len(items)))


async def budget_webhook(request: Request) -> Response:
    """A budget event signed with ``inbound_webhook_secret`` (``inbound``)."""
    services = _services(request)
    secret = services.settings.inbound_webhook_secret
    if secret is None:
        raise ServiceUnavailable(
            "inbound budget webhooks are off: set TOLLHOUSE_INBOUND_WEBHOOK_SECRET"
        )
    # The header is checked before the body is read: an unsigned or stale request costs
    # no more than its headers. Failures count against the sender's address.
    client = client_address(request)
    services.auth_throttle.check(client)
    try:
        parsed = parse_header(request.headers.get(HEADER))
        raw = await read_body(request)
        check(parsed, raw, secret.get_secret_value())
    except SignatureError as exc:
        services.auth_throttle.failed(client)
        raise SignatureInvalid(str(exc)) from None
    event, data = inbound.read_event(raw, max_depth(request))
    async with services.engine.begin() as conn:
        event_id = await inbound.store_event(conn, event, data, raw)
    if event_id is None:
        return JSONResponse(WebhookDuplicate(status="duplicate"))
    services.alerts.on_written.set()
    return JSONResponse(WebhookStored(status="stored", id=event_id))


def _op(handler: Any, summary: str, answers: dict[int, Answer], **more: Any) -> Operation:
    return Operation(handler, summary, answers, tag="alerts", **more)


_CHANNEL = "Notification channel"
# Mounted under ``/api`` behind the admin key.
routes = [
    Resource(
        "/notification-channels",
        {
            "GET": _op(
                list_channels,
                "List notification channels, oldest first",
                {200: Answer(ChannelList, "All of them")},
            ),
            "POST": _op(
                create_channel,
                "Create a notification channel",
                {201: Answer(ChannelWritten, f"{_CHANNEL} created successfully")},
                body=ChannelCreate,
            ),
        },
    ),
    Resource(
        "/notification-channels/{id}",
        {
            "GET": _op(
                get_channel,
                "Get a notification channel",
                {200: Answer(ChannelOne, "Found")},
                errors=(404,),
            ),
            "PUT": _op(
                update_channel,
                "Update a notification channel (merge: fields left out are unchanged)",
                {200: Answer(ChannelWritten, f"{_CHANNEL} updated successfully")},
                body=ChannelUpdate,
                errors=(404,),
            ),
            "DELETE": _op(
                delete_channel,
                "Delete a notification channel",
                {200: Answer(ChannelDeleted, f"{_CHANNEL} deleted successfully")},
                errors=(404,),
            ),
        },
    ),
    Resource(
        "/notification-channels/{id}/test",
        {
            "POST": _op(
                send_test,
                "Send a sample alert through the channel now",
                {200: Answer(SendResult, "What happened (ok false: the send failed)")},
                # 409: the channel's secret or URL is stored encrypted with a key the
                # server does not have (none set, or replaced without a rotation).
                errors=(404, 409, 415),
            )
        },
    ),
    Resource(
        "/alerts",
        {
            "GET": _op(
                list_alerts,
                "Alert history, newest first, filtered and paged by cursor",
                {200: Answer(AlertList, "One page; next_cursor for the next")},
                query=AlertsQuery,
            )
        },
    ),
    Resource(
        "/alerts/{id}/deliveries",
        {
            "GET": _op(
                list_deliveries,
                "One alert's deliveries, each with its attempts",
                {200: Answer(DeliveryList, "Its deliveries")},
                errors=(404,),
            )
        },
    ),
]

# Signed by its sender instead of the admin key: outside the admin mount, at its full path.
webhook_routes = [
    Resource(
        "/api/webhooks/budget",
        {
            "POST": _op(
                budget_webhook,
                "Receive a budget event from another meter (LiteLLM's budget webhook)",
                {200: Answer(WebhookReceipt, "Stored, or a duplicate of one received before")},
                body=inbound.InboundBudgetEvent,
                # 503: TOLLHOUSE_INBOUND_WEBHOOK_SECRET is not set.
                errors=(422, 503),
            )
        },
    )
]
