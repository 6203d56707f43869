"""Sandboxes: the pool with its leases (``sandboxes``) and the broker tokens tracks
present (``broker_tokens``).

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tollhouse.db.types import UTCDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

_LIVE = sa.text("status = 'allocated'")
_FREE = sa.text("status = 'available'")
_EXPIRING = sa.text("status = 'allocated' AND expires_at IS NOT NULL")
_ENDING = sa.text("status IN ('pending_deletion', 'deleting')")


def upgrade() -> None:
    op.create_table(
        "sandboxes",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False, unique=True),
        sa.Column("backend", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("external_id", sa.String(256)),
        sa.Column("url", sa.Text()),
        sa.Column("secret", sa.Text()),
        sa.Column("uid", sa.Integer(), unique=True),
        sa.Column("track_id", sa.String(128)),
        sa.Column("purpose", sa.String(8)),
        sa.Column("token_id", sa.String(64)),
        sa.Column("idempotency_key", sa.String(128)),
        sa.Column("allocated_at", UTCDateTime()),
        sa.Column("expires_at", UTCDateTime()),
        sa.Column("error", sa.Text()),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
    )
    op.create_index(
        "ux_sandboxes_live_track",
        "sandboxes",
        ["track_id"],
        unique=True,
        sqlite_where=_LIVE,
        postgresql_where=_LIVE,
    )
    op.create_index(
        "ix_sandboxes_available",
        "sandboxes",
        ["created_at", "id"],
        sqlite_where=_FREE,
        postgresql_where=_FREE,
    )
    op.create_index(
        "ix_sandboxes_live_expires_at",
        "sandboxes",
        ["expires_at"],
        sqlite_where=_EXPIRING,
        postgresql_where=_EXPIRING,
    )
    op.create_index(
        "ix_sandboxes_ending",
        "sandboxes",
        ["updated_at"],
        sqlite_where=_ENDING,
        postgresql_where=_ENDING,
    )
    op.create_table(
        "broker_tokens",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False, unique=True),
        sa.Column("token_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("hint", sa.String(32), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("revoked_at", UTCDateTime()),
    )


def downgrade() -> None:
    op.drop_table("broker_tokens")
    op.drop_index("ix_sandboxes_ending", "sandboxes")
    op.drop_index("ix_sandboxes_live_expires_at", "sandboxes")
    op.drop_index("ix_sandboxes_available", "sandboxes")
    op.drop_index("ux_sandboxes_live_track", "sandboxes")
    op.drop_table("sandboxes")
