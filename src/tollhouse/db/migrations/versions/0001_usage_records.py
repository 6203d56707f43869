"""Usage ledger: one record per request.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tollhouse.db.types import Money, UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "usage_records",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("key_id", sa.String(64)),
        sa.Column("team_id", sa.String(64)),
        sa.Column("customer_id", sa.String(64)),
        sa.Column("endpoint", sa.String(32), nullable=False),
        sa.Column("provider", sa.Text, nullable=False),
        sa.Column("model", sa.Text, nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger, nullable=False),
        sa.Column("completion_tokens", sa.BigInteger, nullable=False),
        sa.Column("cached_tokens", sa.BigInteger, nullable=False),
        sa.Column("cost", Money(), nullable=False),
        sa.Column("priced", sa.Boolean, nullable=False),
        sa.Column("latency_ms", sa.Float, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("http_status", sa.Integer, nullable=False),
        sa.Column("streamed", sa.Boolean, nullable=False),
        sa.Column("upstream_request_id", sa.Text),
        sa.Column("error", sa.Text),
        sa.PrimaryKeyConstraint("id", name="pk_usage_records"),
    )
    for name, columns in _INDEXES:
        op.create_index(name, "usage_records", columns)


def downgrade() -> None:
    for name, _ in reversed(_INDEXES):
        op.drop_index(name, table_name="usage_records")
    op.drop_table("usage_records")


_INDEXES = (
    ("ix_usage_records_created_at_id", ["created_at", "id"]),
    ("ix_usage_records_key_id_created_at", ["key_id", "created_at"]),
    ("ix_usage_records_team_id_created_at", ["team_id", "created_at"]),
    ("ix_usage_records_customer_id_created_at", ["customer_id", "created_at"]),
    ("ix_usage_records_model_created_at", ["model", "created_at"]),
)
