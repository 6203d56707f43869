"""Sandboxes: live leases by Idempotency-Key (``ix_sandboxes_live_key``), so that the
lease statement finds a key's lease through an index instead of reading every live
lease (docs/benchmarks.md, *Sandboxes*).

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

_LIVE_KEY = sa.text("status = 'allocated' AND idempotency_key IS NOT NULL")


def upgrade() -> None:
    op.create_index(
        "ix_sandboxes_live_key",
        "sandboxes",
        ["idempotency_key"],
        sqlite_where=_LIVE_KEY,
        postgresql_where=_LIVE_KEY,
    )


def downgrade() -> None:
    op.drop_index("ix_sandboxes_live_key", "sandboxes")
