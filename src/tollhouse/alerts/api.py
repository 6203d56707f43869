"""``/api/notification-channels``, ``/api/alerts``: channels, alert history, deliveries.

Same style as the governance API: 201 on create with the entity wrapped
(``{"notification_channel": {...}}``), lists with ``count``, merge updates, 400 naming
the field, 404 for unknown ids. A channel's ``secret`` (webhook signing secret, SMTP
password) is write-only: stored encrypted, answered as ``has_secret``. So is a webhook or
Slack URL: stored encrypted, answered redacted (``alerts/urls.py``).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import aiohttp
from pydantic import BeforeValidator, Field, StrictBool, StrictInt, StrictStr, model_validator
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from starlette.requests import Request
from starlette.responses import Response

from tollhouse.alerts import urls
from tollhouse.alerts.channels import Channel, send
from tollhouse.alerts.models import (
    alert_attempts,
    alert_deliveries,
    alert_events,
    notification_channels,
)
from tollhouse.crypto import require_box
from tollhouse.errors import NotFound, ValidationFailed
from tollhouse.governance.bounds import whole
from tollhouse.governance.query import count
from tollhouse.governance.routes import json_response, resource
from tollhouse.governance.schemas import Body, parse, parse_body, rfc3339
from tollhouse.web.bodies import read_body

NOT_FOUND = "Notification channel not found"
Url = Annotated[StrictStr, Field(pattern=r"^https?://\S+$")]
Text = Annotated[StrictStr, Field(min_length=1)]


class EmailConfig(Body):
    host: Text | None = None
    port: Annotated[StrictInt, Field(ge=1, le=65535), BeforeValidator(whole)] | None = None
    starttls: StrictBool = False
    tls: StrictBool = False
    username: StrictStr | None = None
    # With a username, STARTTLS is used unless tls is; a server without it fails the send
    # rather than receive the password in plaintext — unless this says so (channels.py).
    allow_plaintext_auth: StrictBool = False
    from_: Text | None = Field(default=None, alias="from")
    to: Annotated[list[Text], Field(min_length=1)]

    @model_validator(mode="after")
    def _one_tls(self) -> EmailConfig:
        if self.starttls and self.tls:
            raise ValueError("choose starttls or tls, not both")
        return self


class SlackConfig(Body):
    webhook_url: Url


class WebhookConfig(Body):
    url: Url


_CONFIGS: dict[str, type[Body]] = {
    "email": EmailConfig,
    "slack": SlackConfig,
    "webhook": WebhookConfig,
}


class ChannelCreate(Body):
    name: Text
    type: Literal["email", "slack", "webhook"]
    config: dict[str, Any]
    secret: StrictStr | None = None
    is_default: StrictBool = False


class ChannelUpdate(Body):
    name: Text | None = None
    config: dict[str, Any] | None = None
    secret: StrictStr | None = None
    is_default: StrictBool | None = None


def _config(kind: str, config: dict[str, Any]) -> dict[str, Any]:
    """``config`` checked against its channel type; the stored form."""
    try:
        checked = parse(_CONFIGS[kind], config)
    except ValidationFailed as exc:
        where = f"config.{exc.param}" if exc.param else "config"
        raise ValidationFailed(f"{kind} channel {where}: {exc.message}", param=where) from None
    return checked.model_dump(by_alias=True, exclude_none=True)


def channel_json(row: Any) -> dict[str, Any]:
    config = dict(row.config)
    field = urls.FIELDS.get(row.type)
    if field is not None and isinstance(config.get(field), str):
        config[field] = urls.redact(config[field])  # a legacy row not yet sealed
    return {
        "id": row.id,
        "name": row.name,
        "type": row.type,
        "config": config,
        "has_secret": row.secret is not None,
        "is_default": row.is_default,
        "created_at": rfc3339(row.created_at),
        "updated_at": rfc3339(row.updated_at),
    }


async def _get(conn: AsyncConnection, channel_id: str) -> Any:
    table = notification_channels
    row = (await conn.execute(select(table).where(table.c.id == channel_id))).first()
    if row is None:
        raise NotFound(NOT_FOUND)
    return row


async def _seal_legacy(request: Request) -> None:
    """Encrypt URLs an older version stored in plaintext, when the key is at hand."""
    box = request.app.state.secret_box
    if box is not None:
        async with request.app.state.engine.begin() as conn:
            await urls.seal_stored(conn, box)


async def list_channels(request: Request) -> Response:
    await _seal_legacy(request)
    async with request.app.state.engine.connect() as conn:
        query = select(notification_channels).order_by(notification_channels.c.created_at)
        rows = (await conn.execute(query)).all()
    items = [channel_json(r) for r in rows]
    return json_response({"notification_channels": items, "count": len(items)})


async def create_channel(request: Request) -> Response:
    body = parse_body(ChannelCreate, await read_body(request))
    config, url_secret = _sealed(request, body.type, _config(body.type, body.config))
    secret = require_box(request.app.state.secret_box).encrypt(body.secret) if body.secret else None
    now, channel_id = datetime.now(UTC), str(uuid.uuid4())
    async with request.app.state.engine.begin() as conn:
        await conn.execute(
            insert(notification_channels).values(
                id=channel_id,
                name=body.name,
                type=body.type,
                config=config,
                secret=secret,
                url_secret=url_secret,
                is_default=body.is_default,
                created_at=now,
                updated_at=now,
            )  # fmt: skip
        )
        row = await _get(conn, channel_id)
    message = "Notification channel created successfully"
    return json_response({"message": message, "notification_channel": channel_json(row)}, 201)


def _sealed(request: Request, kind: str, config: dict[str, Any]) -> tuple[dict[str, Any], Any]:
    """``config`` with a new URL redacted and its token; a 400 without a secret key."""
    field = urls.FIELDS.get(kind)
    if field is None or urls.is_redacted(config.get(field)):
        return config, None
    return urls.seal(kind, config, require_box(request.app.state.secret_box))


async def get_channel(request: Request) -> Response:
    await _seal_legacy(request)
    async with request.app.state.engine.connect() as conn:
        row = await _get(conn, request.path_params["id"])
    return json_response({"notification_channel": channel_json(row)})


async def update_channel(request: Request) -> Response:
    body = parse_body(ChannelUpdate, await read_body(request))
    given = body.given()
    channel_id = request.path_params["id"]
    async with request.app.state.engine.begin() as conn:
        row = await _get(conn, channel_id)
        values: dict[str, Any] = {"updated_at": datetime.now(UTC)}
        if given.get("name") is not None:
            values["name"] = body.name
        if given.get("is_default") is not None:
            values["is_default"] = body.is_default
        if body.config is not None:
            config = _config(row.type, {**row.config, **body.config})
            values["config"], url_secret = _sealed(request, row.type, config)
            if url_secret is not None:  # a new URL; else the stored one is kept
                values["url_secret"] = url_secret
        if "secret" in given:
            box = request.app.state.secret_box
            values["secret"] = require_box(box).encrypt(body.secret) if body.secret else None
        table = notification_channels
        await conn.execute(update(table).where(table.c.id == channel_id).values(**values))
        row = await _get(conn, channel_id)
    message = "Notification channel updated successfully"
    return json_response({"message": message, "notification_channel": channel_json(row)})


async def delete_channel(request: Request) -> Response:
    channel_id = request.path_params["id"]
    async with request.app.state.engine.begin() as conn:
        await _get(conn, channel_id)
        table = notification_channels
        await conn.execute(delete(table).where(table.c.id == channel_id))
    return json_response({"message": "Notification channel deleted successfully"})


async def test_channel(request: Request) -> Response:
    """Send a sample event through the channel now; answers what happened."""
    state = request.app.state
    async with state.engine.connect() as conn:
        row = await _get(conn, request.path_params["id"])
    secret = require_box(state.secret_box).decrypt(row.secret) if row.secret else None
    config = urls.reveal(row.type, dict(row.config), row.url_secret, state.secret_box)
    channel = Channel(row.id, row.name, row.type, config, secret)
    now = datetime.now(UTC)
    sample = {
        "event_id": f"test-{uuid.uuid4()}",
        "event": "threshold_crossed",
        "event_group": "team",
        "level": "warning",
        "spend": "80",
        "max_budget": "100",
        "threshold": "0.8",
        "percentage": "80",
        "scope": {"kind": "team", "id": "test", "name": "test-send"},
        "window_start": now.isoformat(),
        "window_end": now.isoformat(),
        "event_message": f"Test alert from Tollhouse for channel '{row.name}'.",
        "test": True,
    }
    async with aiohttp.ClientSession() as session:
        outcome = await send(channel, sample, session, state.settings.alert_send_timeout_s)
    return json_response(
        {
            "ok": outcome.ok,
            "status_code": outcome.status_code,
            "error": outcome.error,
            "preview": outcome.preview,
        }
    )


def event_json(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "source": row.source,
        "event": row.event,
        "level": row.level,
        "budget_id": row.budget_id,
        "scope": {"kind": row.scope_kind, "id": row.scope_id, "name": row.scope_name},
        "threshold": row.threshold,
        "spend": row.spend,
        "max_limit": row.max_limit,
        "window_start": rfc3339(row.window_start),
        "window_end": rfc3339(row.window_end),
        "payload": row.payload,
        "created_at": rfc3339(row.created_at),
    }


async def list_alerts(request: Request) -> Response:
    limit = count(request.query_params, "limit", default=50, low=1, high=1000)
    e = alert_events.c
    async with request.app.state.engine.connect() as conn:
        query = select(alert_events).order_by(e.created_at.desc(), e.id).limit(limit)
        rows = (await conn.execute(query)).all()
        total = (await conn.execute(select(func.count()).select_from(alert_events))).scalar()
    return json_response(
        {"alerts": [event_json(r) for r in rows], "count": len(rows), "total": total}
    )


async def list_deliveries(request: Request) -> Response:
    event_id = request.path_params["id"]
    d, a = alert_deliveries.c, alert_attempts.c
    async with request.app.state.engine.connect() as conn:
        event = (
            await conn.execute(select(alert_events).where(alert_events.c.id == event_id))
        ).first()
        if event is None:
            raise NotFound("Alert not found")
        deliveries = (
            await conn.execute(select(alert_deliveries).where(d.event_id == event_id))
        ).all()
        ids = [row.id for row in deliveries]
        attempts = (
            await conn.execute(
                select(alert_attempts)
                .where(a.delivery_id.in_(ids))
                .order_by(a.delivery_id, a.attempt)
            )
        ).all()
    by_delivery: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
    for row in attempts:
        by_delivery[row.delivery_id].append(
            {
                "attempt": row.attempt,
                "at": rfc3339(row.at),
                "ok": row.ok,
                "status_code": row.status_code,
                "error": row.error,
                "duration_ms": row.duration_ms,
            }
        )
    items = [
        {
            "id": row.id,
            "channel_id": row.channel_id,
            "status": row.status,
            "attempts": row.attempts,
            "next_attempt_at": rfc3339(row.next_attempt_at) if row.status == "pending" else None,
            "last_error": row.last_error,
            "sent_at": rfc3339(row.sent_at),
            "log": by_delivery[row.id],
        }
        for row in deliveries
    ]
    return json_response({"deliveries": items, "count": len(items)})


routes = [
    resource("/notification-channels", {"GET": list_channels, "POST": create_channel}),
    resource(
        "/notification-channels/{id}",
        {"GET": get_channel, "PUT": update_channel, "DELETE": delete_channel},
    ),
    resource("/notification-channels/{id}/test", {"POST": test_channel}),
    resource("/alerts", {"GET": list_alerts}),
    resource("/alerts/{id}/deliveries", {"GET": list_deliveries}),
]
