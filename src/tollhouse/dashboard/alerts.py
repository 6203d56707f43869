"""Alerts: the history (filtered, cursor-paged, newest first) with each alert's
deliveries in the drawer; notification channels listed, created, edited, deleted and
test-sent — through ``alerts.history`` and ``alerts.service`` with the admin API's
bodies, so a form refuses what ``/api/notification-channels`` refuses, naming the field.

A channel's URL and secret are write-only here as in the API: the page shows the URL
redacted (``ChannelRead``), sending the redacted form back keeps the stored one, and a
blank secret on an edit keeps the stored secret (a box clears it).
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from tollhouse.alerts import history, service
from tollhouse.alerts.channels import Outcome
from tollhouse.alerts.routes import AlertServices
from tollhouse.alerts.schemas import (
    AlertRead,
    AlertsQuery,
    ChannelCreate,
    ChannelRead,
    ChannelUpdate,
    DeliveryRead,
)
from tollhouse.dashboard import forms
from tollhouse.dashboard.access import Visitor
from tollhouse.dashboard.pages import Names, form_text, names, page, query_without
from tollhouse.dashboard.render import html
from tollhouse.errors import TollhouseError, ValidationFailed
from tollhouse.web.validation import parse

PAGE_SIZE = 50
FILTERS = ("event", "level", "scope_kind")
EVENTS = ("threshold_crossed", "budget_crossed", "credit_low", "credit_depleted",
          "credit_recovered")  # fmt: skip
LEVELS = ("warning", "critical", "info")
SCOPE_KINDS = ("customer", "team", "key")
TYPES = ("webhook", "slack", "email")


def _services(request: Request) -> AlertServices:
    found: AlertServices = request.app.services
    return found


def scope_of(alert: AlertRead, n: Names) -> str:
    """The scope's current name when it still exists, else the name the alert was sent
    with (an inbound alert names scopes of another meter)."""
    kind, scope_id = alert.scope.kind, alert.scope.id
    if kind in SCOPE_KINDS and scope_id and n.known(kind, scope_id):  # type: ignore[arg-type]
        return f"{kind} {n.of(kind, scope_id)}"  # type: ignore[arg-type]
    return f"{kind or ''} {alert.scope.name or '—'}".strip()


# --- the history --------------------------------------------------------------------


@page
async def alert_list(request: Request, who: Visitor) -> Response:
    error: TollhouseError | None = None
    rows: list[Any] = []
    cursor: str | None = None
    try:
        q = AlertsQuery.parse(request.query_params)
        where = history.AlertFilter(q.event, q.level, q.scope_kind)
        async with _services(request).engine.connect() as conn:
            rows, cursor = await history.list_events(conn, where, PAGE_SIZE, q.cursor)
    except ValidationFailed as exc:
        error = exc
    n = names(request)
    alerts = [AlertRead.from_row(row) for row in rows]
    context = {
        "title": "Alerts",
        "nav": "alerts",
        "error": error,
        "alerts": [(a, scope_of(a, n)) for a in alerts],
        "filters": {name: request.query_params.get(name, "") for name in FILTERS},
        "events": EVENTS,
        "levels": LEVELS,
        "scope_kinds": SCOPE_KINDS,
        "next_query": query_without(request, "cursor", cursor=cursor) if cursor else None,
    }
    return html(request, "alerts.html", context, who, error.status_code if error else 200)


@page
async def alert_detail(request: Request, who: Visitor) -> Response:
    """The drawer: the alert's message and every channel's delivery with its attempts."""
    alert_id = request.path_params["id"]
    async with _services(request).engine.connect() as conn:
        alert = AlertRead.from_row(await history.get_event(conn, alert_id))
        found = await history.list_deliveries(conn, alert_id)
        channels = {row.id: row.name for row in await service.list_channels(conn)}
    deliveries = [DeliveryRead.from_rows(row, attempts) for row, attempts in found]
    context = {
        "a": alert,
        "scope": scope_of(alert, names(request)),
        "deliveries": deliveries,
        "channels": channels,
    }
    return html(request, "alert_detail.html", context, who)


# --- channels -----------------------------------------------------------------------


def _config(kind: str, form: forms.Form) -> dict[str, Any]:
    """The ``config`` of a channel of ``kind`` from its fields (blank ones left out, so
    the type's check says what is required)."""
    if kind == "webhook":
        config: dict[str, Any] = {"url": forms.text(form, "url")}
    elif kind == "slack":
        config = {"webhook_url": forms.text(form, "webhook_url")}
    else:
        config = {
            "host": forms.text(form, "host"),
            "port": forms.integer(form, "port", "config.port"),
            "starttls": forms.checked(form, "starttls"),
            "tls": forms.checked(form, "tls"),
            "username": forms.text(form, "username"),
            "allow_plaintext_auth": forms.checked(form, "allow_plaintext_auth"),
            "from": forms.text(form, "from"),
            "to": forms.words(form, "to") or [],
        }
    return {name: value for name, value in config.items() if value is not None}


def _create_body(form: forms.Form) -> dict[str, Any]:
    kind = form.get("type", "")
    body: dict[str, Any] = {
        "name": forms.text(form, "name"),
        "type": kind,
        "config": _config(kind, form) if kind in TYPES else {},
        "is_default": forms.checked(form, "is_default"),
    }
    secret = forms.text(form, "secret")
    if secret is not None:
        body["secret"] = secret
    return body


def _update_body(kind: str, form: forms.Form) -> dict[str, Any]:
    """A merge: the whole config as the form has it (the redacted URL keeps the stored
    one); the secret only when typed, or cleared."""
    body: dict[str, Any] = {
        "name": forms.text(form, "name"),
        "config": _config(kind, form),
        "is_default": forms.checked(form, "is_default"),
    }
    if forms.checked(form, "clear_secret"):
        body["secret"] = None
    elif (secret := forms.text(form, "secret")) is not None:
        body["secret"] = secret
    return body


def _form_of(channel: ChannelRead | None) -> forms.Form:
    if channel is None:
        return {"type": "webhook"}
    config = channel.config
    form = {"name": channel.name, "type": channel.type,
            "is_default": "on" if channel.is_default else ""}  # fmt: skip
    for name in ("url", "webhook_url", "host", "username", "from"):
        form[name] = str(config.get(name) or "")
    form["port"] = str(config.get("port") or "")
    form["to"] = ", ".join(config.get("to") or [])
    for name in ("starttls", "tls", "allow_plaintext_auth"):
        form[name] = "on" if config.get(name) else ""
    return form


@page
async def channel_list(request: Request, who: Visitor) -> Response:
    services = _services(request)
    if services.secret_box is not None:  # as the API's list does (alerts/urls.py)
        async with services.engine.begin() as conn:
            await service.seal_legacy(conn, services.secret_box)
    async with services.engine.connect() as conn:
        rows = await service.list_channels(conn)
    context = {"title": "Notification channels", "nav": "alerts",
               "channels": [ChannelRead.from_row(row) for row in rows]}  # fmt: skip
    return html(request, "channels.html", context, who)


def _channel_page(
    request: Request, who: Visitor, channel: ChannelRead | None, form: forms.Form | None,
    error: TollhouseError | None = None, sent: Outcome | None = None,
) -> Response:  # fmt: skip
    context = {
        "title": f"Channel {channel.name}" if channel else "New notification channel",
        "nav": "alerts",
        "channel": channel,
        "form": form if form is not None else _form_of(channel),
        "types": TYPES,
        "error": error,
        "sent": sent,
    }
    return html(request, "channel_form.html", context, who, error.status_code if error else 200)


async def _read(request: Request, channel_id: str) -> ChannelRead:
    async with _services(request).engine.connect() as conn:
        return ChannelRead.from_row(await service.get_channel(conn, channel_id))


@page
async def channel_new(request: Request, who: Visitor) -> Response:
    if request.method == "GET":
        return _channel_page(request, who, None, None)
    form = await form_text(request)
    services = _services(request)
    try:
        body = parse(ChannelCreate, _create_body(form))
        async with services.engine.begin() as conn:
            row = await service.create_channel(conn, body, services.secret_box)
    except TollhouseError as exc:
        form.pop("secret", None)  # never echoed back into the page
        return _channel_page(request, who, None, form, exc)
    return RedirectResponse(f"/ui/alerts/channels/{row.id}?saved=1", 303)


@page
async def channel_edit(request: Request, who: Visitor) -> Response:
    channel_id = request.path_params["id"]
    channel = await _read(request, channel_id)
    if request.method == "GET":
        return _channel_page(request, who, channel, None)
    form = await form_text(request)
    services = _services(request)
    try:
        body = parse(ChannelUpdate, _update_body(channel.type, form))
        async with services.engine.begin() as conn:
            await service.update_channel(conn, channel_id, body, services.secret_box)
    except TollhouseError as exc:
        form.pop("secret", None)
        return _channel_page(request, who, channel, {**form, "type": channel.type}, exc)
    return RedirectResponse(f"/ui/alerts/channels/{channel_id}?saved=1", 303)


@page
async def channel_test(request: Request, who: Visitor) -> Response:
    """What ``POST /api/notification-channels/{id}/test`` does: a sample sent now, and
    what happened shown on the channel's page."""
    services = _services(request)
    async with services.engine.connect() as conn:
        row = await service.get_channel(conn, request.path_params["id"])
    channel = ChannelRead.from_row(row)
    try:
        outcome = await service.send_test(
            row, services.secret_box, services.settings.alert_send_timeout_s
        )
    except TollhouseError as exc:
        return _channel_page(request, who, channel, None, exc)
    return _channel_page(request, who, channel, None, sent=outcome)


@page
async def channel_delete(request: Request, who: Visitor) -> Response:
    async with _services(request).engine.begin() as conn:
        await service.delete_channel(conn, request.path_params["id"])
    return RedirectResponse("/ui/alerts/channels?deleted=1", 303)


def routes() -> list[Route]:
    # The channel paths first: /ui/alerts/{id} would take "channels" for an alert id.
    return [
        Route("/ui/alerts", alert_list, methods=["GET"]),
        Route("/ui/alerts/channels", channel_list, methods=["GET"]),
        Route("/ui/alerts/channels/new", channel_new, methods=["GET", "POST"]),
        Route("/ui/alerts/channels/{id}", channel_edit, methods=["GET", "POST"]),
        Route("/ui/alerts/channels/{id}/test", channel_test, methods=["POST"]),
        Route("/ui/alerts/channels/{id}/delete", channel_delete, methods=["POST"]),
        Route("/ui/alerts/{id}", alert_detail, methods=["GET"]),
    ]
