"""Agents: sessions (``agent_sessions``) and their durable event log
(``session_events``).

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tollhouse.db.types import UTCDateTime

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "agent_sessions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("tenant_kind", sa.String(16), nullable=False),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("key_id", sa.String(64)),
        sa.Column("persona_id", sa.String(128)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("last_seq", sa.BigInteger(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_index(
        "ix_agent_sessions_tenant", "agent_sessions", ["tenant_kind", "tenant_id", "updated_at"]
    )
    op.create_table(
        "session_events",
        sa.Column("event_id", sa.String(80), primary_key=True),
        sa.Column("session_id", sa.String(80), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(24), nullable=False),
        sa.Column("type", sa.String(24), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.UniqueConstraint("session_id", "seq", name="ux_session_events_seq"),
    )


def downgrade() -> None:
    op.drop_table("session_events")
    op.drop_index("ix_agent_sessions_tenant", "agent_sessions")
    op.drop_table("agent_sessions")
