"""The alerting part of the admin API's OpenAPI document (``openapi.document``):
``/api/notification-channels`` and ``/api/alerts`` (``alerts/api.py``).

A channel's ``config`` depends on its ``type``, so a create body is one of three shapes;
its URL and ``secret`` are write-only (answered redacted, and as ``has_secret``).
"""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import models_json_schema

from tollhouse.governance.openapi import (
    BOOL,
    INT,
    JSON_VALUE_REF,
    NUM,
    STR,
    TEXT,
    TIME,
    count_param,
    no_nul,
    nullable,
    obj,
    operation,
    ref,
    reply,
)

_REF = "#/components/schemas/{model}"
# A URL as ``alerts.api.Url`` takes it, and without a NUL (``bounds.no_nul``).
_URL = {"type": "string", "pattern": "^https?://[^\\s\\x00]+$"}
_KINDS = ("email", "slack", "webhook")
_TLS_BOTH = {
    "not": {
        "properties": {"starttls": {"const": True}, "tls": {"const": True}},
        "required": ["starttls", "tls"],
    },
    "description": "SMTP settings; starttls or tls, not both",
}
_ANY_OBJECT = {"type": "object", "propertyNames": TEXT, "additionalProperties": JSON_VALUE_REF}


def _configs() -> dict[str, Any]:
    from tollhouse.alerts.api import EmailConfig, SlackConfig, WebhookConfig

    _, defs = models_json_schema(
        [(model, "validation") for model in (EmailConfig, SlackConfig, WebhookConfig)],
        ref_template=_REF,
    )
    configs: dict[str, Any] = defs["$defs"]
    configs["SlackConfig"]["properties"]["webhook_url"].update(_URL)
    configs["WebhookConfig"]["properties"]["url"].update(_URL)
    configs["EmailConfig"].update(_TLS_BOTH)
    no_nul(configs)
    return configs


def _channel_create() -> dict[str, Any]:
    """``ChannelCreate``: one shape per ``type``, its ``config`` checked against it."""
    shapes = []
    for kind in _KINDS:
        shape = obj(
            {
                "name": {**TEXT, "minLength": 1},
                "type": {"const": kind},
                "config": ref(f"{kind.capitalize()}Config"),
                "secret": {
                    **nullable(TEXT),
                    "description": "webhook signing secret or SMTP password; write-only",
                },
                "is_default": {**BOOL, "default": False},
            },
            optional=("secret", "is_default"),
        )
        shape["propertyNames"] = TEXT
        shape["additionalProperties"] = JSON_VALUE_REF
        shapes.append(shape)
    return {"oneOf": shapes, "description": "A notification channel"}


def _channel_update() -> dict[str, Any]:
    """``ChannelUpdate``: fields merge; ``config`` merges into the stored one and the
    result is checked against the channel's type (400 naming the field)."""
    update = obj(
        {
            "name": nullable({**TEXT, "minLength": 1}),
            "config": {
                **nullable(_ANY_OBJECT),
                "description": "merged into the stored config, then checked as the "
                "channel's type requires (EmailConfig, SlackConfig, WebhookConfig)",
            },
            "secret": {**nullable(TEXT), "description": "null or empty: removed"},
            "is_default": nullable(BOOL),
        },
        optional=("name", "config", "secret", "is_default"),
    )
    update["propertyNames"] = TEXT
    update["additionalProperties"] = JSON_VALUE_REF
    return update


CHANNEL = obj(
    {
        "id": STR,
        "name": STR,
        "type": {"enum": list(_KINDS)},
        "config": {
            "type": "object",
            "description": "as sent, but a webhook or Slack URL redacted: scheme://host[:port]/***",
        },
        "has_secret": BOOL,
        "is_default": BOOL,
        "created_at": TIME,
        "updated_at": TIME,
    }
)
_SCOPE = obj({"kind": STR, "id": STR, "name": STR}, nulls=("kind", "id", "name"))
ALERT = obj(
    {
        "id": STR,
        "source": {"enum": ["tollhouse", "inbound"]},
        "event": STR,
        "level": STR,
        "budget_id": STR,
        "scope": _SCOPE,
        "threshold": NUM,
        "spend": NUM,
        "max_limit": NUM,
        "window_start": TIME,
        "window_end": TIME,
        "payload": {"type": "object"},
        "created_at": TIME,
    },
    nulls=("budget_id", "threshold", "spend", "max_limit", "window_start", "window_end"),
)
_ATTEMPT = obj(
    {"attempt": INT, "at": TIME, "ok": BOOL, "status_code": INT, "error": STR, "duration_ms": NUM},
    nulls=("status_code", "error"),
)
DELIVERY = obj(
    {
        "id": STR,
        "channel_id": STR,
        "status": {"enum": ["pending", "sent", "failed"]},
        "attempts": INT,
        "next_attempt_at": TIME,
        "last_error": STR,
        "sent_at": TIME,
        "log": {"type": "array", "items": _ATTEMPT},
    },
    nulls=("next_attempt_at", "last_error", "sent_at"),
)


def schemas() -> dict[str, Any]:
    """The alerting components: request and response shapes."""
    return {
        **_configs(),
        "ChannelCreate": _channel_create(),
        "ChannelUpdate": _channel_update(),
        "NotificationChannel": CHANNEL,
        "Alert": ALERT,
        "Delivery": DELIVERY,
    }


_ID = {"name": "id", "in": "path", "required": True, "schema": STR}


def paths() -> dict[str, Any]:
    one = obj({"notification_channel": ref("NotificationChannel")})
    changed = obj({"message": STR, "notification_channel": ref("NotificationChannel")})
    channels = {"type": "array", "items": ref("NotificationChannel")}

    def op(summary: str, responses: dict[str, Any], **more: Any) -> dict[str, Any]:
        return operation(summary, responses, tag="alerts", **more)

    sent = obj(
        {
            "ok": BOOL,
            "status_code": nullable(INT),
            "error": nullable(STR),
            "preview": {
                **BOOL,
                "description": "true: the channel lacks settings to send, so the gateway "
                "logged what it would have sent",
            },
        }
    )
    return {
        "/api/notification-channels": {
            "get": op(
                "List notification channels, oldest first",
                {
                    "200": reply(
                        "All of them", obj({"notification_channels": channels, "count": INT})
                    )
                },
            ),
            "post": op(
                "Create a notification channel",
                {"201": reply("Notification channel created successfully", changed)},
                body="ChannelCreate",
            ),
        },
        "/api/notification-channels/{id}": {
            "get": op(
                "Get a notification channel",
                {"200": reply("Found", one)},
                params=[_ID],
                errors=("404",),
            ),
            "put": op(
                "Update a notification channel (merge: fields left out are unchanged)",
                {"200": reply("Notification channel updated successfully", changed)},
                body="ChannelUpdate",
                params=[_ID],
                errors=("404",),
            ),
            "delete": op(
                "Delete a notification channel",
                {"200": reply("Notification channel deleted successfully", ref("Message"))},
                params=[_ID],
                errors=("404",),
            ),
        },
        "/api/notification-channels/{id}/test": {
            "post": op(
                "Send a sample alert through the channel now",
                {"200": reply("What happened (ok false: the send failed)", sent)},
                params=[_ID],
                errors=("400", "404", "415"),
            )
        },
        "/api/alerts": {
            "get": op(
                "Alert history, newest first",
                {
                    "200": reply(
                        "The latest ones",
                        obj(
                            {
                                "alerts": {"type": "array", "items": ref("Alert")},
                                "count": INT,
                                "total": INT,
                            }
                        ),
                    )
                },
                params=[count_param(50, 1000)],
            )
        },
        "/api/alerts/{id}/deliveries": {
            "get": op(
                "One alert's deliveries, each with its attempts",
                {
                    "200": reply(
                        "Its deliveries",
                        obj(
                            {
                                "deliveries": {"type": "array", "items": ref("Delivery")},
                                "count": INT,
                            }
                        ),
                    )
                },
                params=[_ID],
                errors=("404",),
            )
        },
    }
