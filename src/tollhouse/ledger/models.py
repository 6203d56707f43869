"""The usage ledger table: one row per request that reached a provider (or tried to)."""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Float, Index, Integer, String, Table, Text, text

from tollhouse.db.meta import metadata
from tollhouse.db.types import Money, UTCDateTime

usage_records = Table(
    "usage_records",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("key_id", String(64)),
    Column("team_id", String(64)),
    Column("customer_id", String(64)),
    Column("endpoint", String(32), nullable=False),
    Column("provider", Text, nullable=False),
    Column("model", Text, nullable=False),
    Column("prompt_tokens", BigInteger, nullable=False, default=0),
    Column("completion_tokens", BigInteger, nullable=False, default=0),
    Column("cached_tokens", BigInteger, nullable=False, default=0),
    Column("cost", Money(), nullable=False),
    Column("priced", Boolean, nullable=False, default=True),
    Column("latency_ms", Float, nullable=False),
    Column("status", String(16), nullable=False),
    Column("http_status", Integer, nullable=False),
    Column("streamed", Boolean, nullable=False, default=False),
    Column("upstream_request_id", Text),
    Column("error", Text),
    Column("credit_account_id", String(64)),  # the prepaid account that paid, if any
    # The key of the journal post that charged it to that account (credits/posting.py).
    Column("credit_post", String(255)),
    # An agent session's model call: its session and persona (agent token budgets).
    Column("session_id", String(64)),
    Column("persona_id", String(128)),
    Index("ix_usage_records_created_at_id", "created_at", "id"),
    Index("ix_usage_records_key_id_created_at", "key_id", "created_at"),
    Index("ix_usage_records_team_id_created_at", "team_id", "created_at"),
    Index("ix_usage_records_customer_id_created_at", "customer_id", "created_at"),
    Index("ix_usage_records_model_created_at", "model", "created_at"),
    Index("ix_usage_records_credit_account_id_created_at", "credit_account_id", "created_at"),
    Index(
        "ix_usage_records_session_id",
        "session_id",
        sqlite_where=text("session_id IS NOT NULL"),
        postgresql_where=text("session_id IS NOT NULL"),
    ),
    Index(
        "ix_usage_records_credit_post",
        "credit_post",
        sqlite_where=text("credit_post IS NOT NULL"),
        postgresql_where=text("credit_post IS NOT NULL"),
    ),
)
