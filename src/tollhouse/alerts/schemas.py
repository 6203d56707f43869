"""Alerting admin API bodies: notification channels, alert history, deliveries, and the
inbound budget webhook's answer.

A channel's ``config`` depends on its ``type``: a create or update is read with a free
``config`` and then checked against the type's model (``checked_config``), so that the
message names the channel type; the document shows the pairing (one ``oneOf`` branch per
type). A channel's URL and ``secret`` are write-only: answered redacted, and as
``has_secret``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BeforeValidator,
    ConfigDict,
    Field,
    RootModel,
    StrictBool,
    StrictInt,
    StrictStr,
    model_validator,
)

from tollhouse.alerts import urls
from tollhouse.errors import ValidationFailed
from tollhouse.web.query import Count, Filter, Query
from tollhouse.web.responses import Exact, Reply, Time
from tollhouse.web.validation import Body, parse, whole

Kind = Literal["email", "slack", "webhook"]


def _sendable(url: str) -> str:
    """A URL a request can be sent to: it parses, and names a host and a valid port."""
    if urls.host_of(url) is None:
        raise ValueError("must be an http(s) URL with a host (and a port in 1-65535)")
    return url


# A URL, and never a NUL (which the body reader refuses anywhere).
Url = Annotated[StrictStr, Field(pattern=r"^https?://[^\s\x00]+$"), AfterValidator(_sendable)]
Text = Annotated[StrictStr, Field(min_length=1)]


class EmailConfig(Body):
    """SMTP settings; ``starttls`` or ``tls``, not both."""

    model_config = ConfigDict(
        json_schema_extra={
            "not": {
                "properties": {"starttls": {"const": True}, "tls": {"const": True}},
                "required": ["starttls", "tls"],
            }
        }
    )

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
    def _one_tls(self) -> Self:
        if self.starttls and self.tls:
            raise ValueError("choose starttls or tls, not both")
        return self


class SlackConfig(Body):
    webhook_url: Url


class WebhookConfig(Body):
    url: Url


CONFIGS: dict[str, type[Body]] = {
    "email": EmailConfig,
    "slack": SlackConfig,
    "webhook": WebhookConfig,
}


def checked_config(kind: str, config: dict[str, Any]) -> dict[str, Any]:
    """``config`` checked against its channel type; the stored form."""
    try:
        checked = parse(CONFIGS[kind], config)
    except ValidationFailed as exc:
        where = f"config.{exc.param}" if exc.param else "config"
        raise ValidationFailed(f"{kind} channel {where}: {exc.message}", param=where) from None
    return checked.model_dump(by_alias=True, exclude_none=True)


def _config_per_type(schema: dict[str, Any]) -> None:
    """JSON Schema of ``checked_config`` after the field checks: ``config`` is the model
    of the channel's ``type``."""
    schema["oneOf"] = [
        {
            "properties": {
                "type": {"const": kind},
                "config": model.model_json_schema(mode="validation", by_alias=True),
            }
        }
        for kind, model in CONFIGS.items()
    ]


class ChannelCreate(Body):
    """A notification channel."""

    model_config = ConfigDict(json_schema_extra=_config_per_type)

    name: Text
    type: Kind
    config: dict[str, Any]
    secret: StrictStr | None = Field(
        default=None, description="webhook signing secret or SMTP password; write-only"
    )
    is_default: StrictBool = False


class ChannelUpdate(Body):
    """Fields merge; ``config`` merges into the stored one and the result is checked as
    the channel's type requires (a 400 naming the field)."""

    name: Text | None = None
    config: dict[str, Any] | None = Field(
        default=None,
        description="merged into the stored config, then checked as the channel's type "
        "requires (EmailConfig, SlackConfig, WebhookConfig)",
    )
    secret: StrictStr | None = Field(default=None, description="null or empty: removed")
    is_default: StrictBool | None = None


class AlertsQuery(Query):
    limit: Annotated[int, Count(default=50, high=1000)] = Field(
        default=50, description="how many, newest first"
    )
    cursor: Filter = Field(default=None, description="next_cursor of the previous page")
    event: Filter = Field(
        default=None, description="only this event (threshold_crossed, credit_low, …)"
    )
    level: Filter = Field(default=None, description="only this level (warning, critical, info)")
    scope_kind: Filter = Field(default=None, description="only alerts of this scope kind")
    scope_id: Filter = Field(default=None, description="only alerts of this scope")


# --- answers --------------------------------------------------------------------------


class ChannelRead(Reply):
    id: str
    name: str
    type: Kind
    config: dict[str, Any] = Field(
        description="as sent, but a webhook or Slack URL redacted: scheme://host[:port]/***"
    )
    has_secret: bool
    is_default: bool
    created_at: Time
    updated_at: Time

    @classmethod
    def from_row(cls, row: Any) -> ChannelRead:
        config = dict(row.config)
        field = urls.FIELDS.get(row.type)
        if field is not None and isinstance(config.get(field), str):
            config[field] = urls.redact(config[field])  # a legacy row not yet sealed
        return cls(
            id=row.id,
            name=row.name,
            type=row.type,
            config=config,
            has_secret=row.secret is not None,
            is_default=row.is_default,
            created_at=row.created_at,
            updated_at=row.updated_at,
        )


class ChannelList(Reply):
    notification_channels: list[ChannelRead]
    count: int


class ChannelOne(Reply):
    notification_channel: ChannelRead


class ChannelWritten(Reply):
    message: str
    notification_channel: ChannelRead


class ChannelDeleted(Reply):
    message: str


class SendResult(Reply):
    """What a test send did (``ok`` false: the send failed)."""

    ok: bool
    status_code: int | None
    error: str | None
    preview: bool = Field(
        description="true: the channel lacks settings to send, so the gateway logged what "
        "it would have sent"
    )


class AlertScope(Reply):
    kind: str | None
    id: str | None
    name: str | None


class AlertRead(Reply):
    id: str
    source: Literal["tollhouse", "inbound"]
    event: str
    level: str
    budget_id: str | None
    scope: AlertScope
    threshold: Exact | None
    spend: Exact | None
    max_limit: Exact | None
    window_start: Time | None
    window_end: Time | None
    payload: dict[str, Any] = Field(description="what the channels were sent")
    created_at: Time

    @classmethod
    def from_row(cls, row: Any) -> AlertRead:
        return cls(
            id=row.id,
            source=row.source,
            event=row.event,
            level=row.level,
            budget_id=row.budget_id,
            scope=AlertScope(kind=row.scope_kind, id=row.scope_id, name=row.scope_name),
            threshold=row.threshold,
            spend=row.spend,
            max_limit=row.max_limit,
            window_start=row.window_start,
            window_end=row.window_end,
            payload=row.payload,
            created_at=row.created_at,
        )


class AlertList(Reply):
    alerts: list[AlertRead]
    count: int
    total: int = Field(description="how many alerts the filters select, on every page")
    next_cursor: str | None


class AttemptRead(Reply):
    attempt: int
    at: Time
    ok: bool
    status_code: int | None
    error: str | None
    duration_ms: float


class DeliveryRead(Reply):
    id: str
    channel_id: str
    status: Literal["pending", "sent", "failed"]
    attempts: int
    next_attempt_at: Time | None = Field(description="set while pending")
    last_error: str | None
    sent_at: Time | None
    log: list[AttemptRead]

    @classmethod
    def from_rows(cls, row: Any, attempts: list[Any]) -> DeliveryRead:
        return cls(
            id=row.id,
            channel_id=row.channel_id,
            status=row.status,
            attempts=row.attempts,
            next_attempt_at=row.next_attempt_at if row.status == "pending" else None,
            last_error=row.last_error,
            sent_at=row.sent_at,
            log=[
                AttemptRead(
                    attempt=a.attempt,
                    at=a.at,
                    ok=a.ok,
                    status_code=a.status_code,
                    error=a.error,
                    duration_ms=a.duration_ms,
                )
                for a in attempts
            ],
        )


class DeliveryList(Reply):
    deliveries: list[DeliveryRead]
    count: int


class WebhookStored(Reply):
    status: Literal["stored"]
    id: str = Field(description="the alert's id in the history")


class WebhookDuplicate(Reply):
    status: Literal["duplicate"]


class WebhookReceipt(RootModel[WebhookStored | WebhookDuplicate]):
    """Stored (and routed to the default channels), or already received."""
