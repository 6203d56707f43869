"""Governance tables: customers, teams, virtual keys, and the budgets and rate limits
they carry.

A budget or rate limit row belongs to exactly one owner (the entity whose ``budget_id``
or ``rate_limit_id`` names it). Spend and request counters are **not** stored here: the
ledger is the record of what was consumed, and counters are rebuilt from it, so the two
cannot drift. ``last_reset`` is the window anchor: rolling windows follow from it in
whole steps, and ``usage-reset`` moves it to now.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
)

from tollhouse.db.meta import metadata
from tollhouse.db.types import ExactDecimal, UTCDateTime

budgets = Table(
    "budgets",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("max_limit", ExactDecimal(), nullable=False),
    Column("reset_duration", String(16), nullable=False),
    Column("calendar_aligned", Boolean, nullable=False, default=False),
    Column("timezone", String(64), nullable=False, default="UTC"),
    Column("hard_limit_ratio", ExactDecimal(), nullable=False),
    Column("alert_thresholds", JSON, nullable=False),
    Column("alert_channels", JSON),  # channel ids; NULL: the default channels
    Column("last_reset", UTCDateTime(), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
)

rate_limits = Table(
    "rate_limits",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("token_max_limit", BigInteger),
    Column("token_reset_duration", String(16)),
    Column("token_last_reset", UTCDateTime(), nullable=False),
    Column("request_max_limit", BigInteger),
    Column("request_reset_duration", String(16)),
    Column("request_last_reset", UTCDateTime(), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
)

customers = Table(
    "customers",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", Text, nullable=False),
    Column("budget_id", String(64), ForeignKey("budgets.id", ondelete="SET NULL")),
    Column("rate_limit_id", String(64), ForeignKey("rate_limits.id", ondelete="SET NULL")),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
)

teams = Table(
    "teams",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", Text, nullable=False),
    Column("customer_id", String(64), ForeignKey("customers.id", ondelete="SET NULL")),
    Column("budget_id", String(64), ForeignKey("budgets.id", ondelete="SET NULL")),
    Column("rate_limit_id", String(64), ForeignKey("rate_limits.id", ondelete="SET NULL")),
    Column("on_meter_failure", String(8)),  # "open" | "closed"; NULL: the operator default
    Column("tags", JSON),  # policies attach to and match tags; NULL: none
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Index("ix_teams_customer_id", "customer_id"),
)

virtual_keys = Table(
    "virtual_keys",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", Text, nullable=False),
    Column("description", Text),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("key_hint", String(32), nullable=False),
    Column("is_active", Boolean, nullable=False, default=True),
    Column("expires_at", UTCDateTime()),
    Column("team_id", String(64), ForeignKey("teams.id", ondelete="SET NULL")),
    Column("customer_id", String(64), ForeignKey("customers.id", ondelete="SET NULL")),
    Column("budget_id", String(64), ForeignKey("budgets.id", ondelete="SET NULL")),
    Column("rate_limit_id", String(64), ForeignKey("rate_limits.id", ondelete="SET NULL")),
    Column("allowed_models", JSON),
    Column("allowed_providers", JSON),
    Column("max_parallel_requests", Integer),
    Column("on_meter_failure", String(8)),
    Column("tags", JSON),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Index("ix_virtual_keys_team_id", "team_id"),
    Index("ix_virtual_keys_customer_id", "customer_id"),
)

# One row; its version is bumped in the same transaction as every governance write, so
# that every replica (and a server beside a CLI writing to the same database) notices
# a change with one cheap read and reloads its snapshot.
governance_state = Table(
    "governance_state",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("version", BigInteger, nullable=False),
)
