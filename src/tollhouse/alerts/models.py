"""Alert tables: notification channels, threshold events, and the outbox of deliveries.

An event is written once per (budget, threshold, window): ``dedup_key`` is unique, so
when several replicas see the same crossing, one insert wins and the others change
nothing. The deliveries of an event (one per channel) are written in the same
transaction as the event — the outbox — and a dispatcher sends them afterwards, so a
request never waits on a channel and no alert leaves before its event is committed.
Every attempt of a delivery is kept (``alert_attempts``) for the delivery log.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
)

from tollhouse.db.meta import metadata
from tollhouse.db.types import ExactDecimal, Money, UTCDateTime

notification_channels = Table(
    "notification_channels",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", Text, nullable=False),
    Column("type", String(16), nullable=False),  # email | slack | webhook
    Column("config", JSON, nullable=False),
    Column("secret", Text),  # Fernet token (crypto.SecretBox); never returned by the API
    # The webhook/Slack URL as a Fernet token; config holds it redacted (alerts/urls.py).
    Column("url_secret", Text),
    Column("is_default", Boolean, nullable=False, default=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
)

alert_events = Table(
    "alert_events",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("dedup_key", String(200), nullable=False, unique=True),
    Column("source", String(16), nullable=False),  # tollhouse | inbound
    Column("event", String(64), nullable=False),  # e.g. threshold_crossed, budget_exceeded
    Column("level", String(16), nullable=False),  # warning | critical
    Column("budget_id", String(64)),
    Column("scope_kind", String(16)),
    Column("scope_id", String(64)),
    Column("scope_name", Text),
    Column("threshold", ExactDecimal()),
    Column("spend", Money()),
    Column("max_limit", Money()),
    Column("window_start", UTCDateTime()),
    Column("window_end", UTCDateTime()),
    Column("payload", JSON, nullable=False),  # what channels send, LiteLLM's names included
    Column("created_at", UTCDateTime(), nullable=False),
    Index("ix_alert_events_created_at", "created_at"),
)

alert_deliveries = Table(
    "alert_deliveries",
    metadata,
    Column("id", String(64), primary_key=True),
    Column(
        "event_id", String(64), ForeignKey("alert_events.id", ondelete="CASCADE"), nullable=False
    ),
    Column("channel_id", String(64), nullable=False),  # kept when the channel is deleted
    Column("status", String(16), nullable=False),  # pending | sent | failed
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", UTCDateTime(), nullable=False),
    Column("last_error", Text),
    Column("sent_at", UTCDateTime()),
    Column("created_at", UTCDateTime(), nullable=False),
    Index("ix_alert_deliveries_due", "status", "next_attempt_at"),
    Index("ix_alert_deliveries_event_id", "event_id"),
)

alert_attempts = Table(
    "alert_attempts",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column(
        "delivery_id",
        String(64),
        ForeignKey("alert_deliveries.id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("attempt", Integer, nullable=False),
    Column("at", UTCDateTime(), nullable=False),
    Column("ok", Boolean, nullable=False),
    Column("status_code", Integer),
    Column("error", Text),
    Column("duration_ms", Float, nullable=False),
    Index("ix_alert_attempts_delivery_id", "delivery_id"),
)
