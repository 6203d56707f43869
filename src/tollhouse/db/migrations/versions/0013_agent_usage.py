"""Ledger: an agent session's model calls carry their session and persona
(``usage_records.session_id``, ``persona_id``), which the agent token budgets count.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ALTER TABLE … ADD COLUMN on both engines: nullable columns, no table copy.
    op.add_column("usage_records", sa.Column("session_id", sa.String(64)))
    op.add_column("usage_records", sa.Column("persona_id", sa.String(128)))
    op.create_index(
        "ix_usage_records_session_id",
        "usage_records",
        ["session_id"],
        sqlite_where=sa.text("session_id IS NOT NULL"),
        postgresql_where=sa.text("session_id IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_usage_records_session_id", table_name="usage_records")
    with op.batch_alter_table("usage_records") as batch:
        batch.drop_column("persona_id")
        batch.drop_column("session_id")
