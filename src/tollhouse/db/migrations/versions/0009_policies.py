"""Policies: the ``policies`` table, the decision log (``policy_decisions``), and
``tags`` on teams and virtual keys (what policies attach to and conditions match).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tollhouse.db.types import UTCDateTime

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("teams", "virtual_keys"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("tags", sa.JSON(), nullable=True))
    op.create_table(
        "policies",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False, unique=True),
        sa.Column("description", sa.Text()),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("effect", sa.String(8), nullable=False),
        sa.Column("engine", sa.String(8), nullable=False),
        sa.Column("condition", sa.Text()),
        sa.Column("rule", sa.String(128)),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("attachments", sa.JSON(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("fail_mode", sa.String(8), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_table(
        "policy_decisions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("decision", sa.String(8), nullable=False),
        sa.Column("policy_id", sa.String(64)),
        sa.Column("policy_name", sa.String(128)),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("applied", sa.JSON(), nullable=False),
        sa.Column("errors", sa.JSON(), nullable=False),
        sa.Column("request_id", sa.String(64)),
        sa.Column("key_id", sa.String(64)),
        sa.Column("team_id", sa.String(64)),
        sa.Column("customer_id", sa.String(64)),
        sa.Column("resource", sa.JSON(), nullable=False),
        sa.Column("duration_us", sa.Integer(), nullable=False),
    )
    op.create_index("ix_policy_decisions_created_at_id", "policy_decisions", ["created_at", "id"])
    op.create_index(
        "ix_policy_decisions_policy_id_created_at",
        "policy_decisions",
        ["policy_id", "created_at"],
    )


def downgrade() -> None:
    op.drop_table("policy_decisions")
    op.drop_table("policies")
    for table in ("virtual_keys", "teams"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("tags")
