"""The policies table and the decision log."""

from __future__ import annotations

from sqlalchemy import JSON, Boolean, Column, Index, Integer, String, Table, Text

from tollhouse.db.meta import metadata
from tollhouse.db.types import UTCDateTime

policies = Table(
    "policies",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("description", Text),
    Column("action", String(32), nullable=False),  # llm.request | tool.execute | … | *
    Column("effect", String(8), nullable=False),  # allow | deny
    Column("engine", String(8), nullable=False),  # cel | rego | opa
    Column("condition", Text),  # NULL: always matches
    Column("rule", String(128)),  # rego: the rule queried
    Column("priority", Integer, nullable=False),  # higher first
    Column("attachments", JSON, nullable=False),  # [{"type": "global"|…, "id"|"tag": …}]
    Column("enabled", Boolean, nullable=False),
    Column("fail_mode", String(8), nullable=False),  # closed | open
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
)

# What was decided, with an id a client sees (x-tollhouse-policy-decision): every denial
# and every decision an engine error touched; allows too with ``policy_log_allows``.
policy_decisions = Table(
    "policy_decisions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("action", String(32), nullable=False),
    Column("decision", String(8), nullable=False),  # allow | deny
    Column("policy_id", String(64)),  # the policy that decided; NULL: the default
    Column("policy_name", String(128)),
    Column("reason", Text, nullable=False),
    Column("applied", JSON, nullable=False),  # names of the policies evaluated
    Column("errors", JSON, nullable=False),  # [{"policy", "error", "fail_mode"}]
    Column("request_id", String(64)),
    Column("key_id", String(64)),
    Column("team_id", String(64)),
    Column("customer_id", String(64)),
    Column("resource", JSON, nullable=False),
    Column("duration_us", Integer, nullable=False),
    Index("ix_policy_decisions_created_at_id", "created_at", "id"),
    Index("ix_policy_decisions_policy_id_created_at", "policy_id", "created_at"),
)
