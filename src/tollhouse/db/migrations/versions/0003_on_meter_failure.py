"""What a key or team wants when the shared meter (Redis) is unreachable.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # batch_alter_table: SQLite cannot alter a table in place.
    for table in ("teams", "virtual_keys"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("on_meter_failure", sa.String(length=8), nullable=True))


def downgrade() -> None:
    for table in ("teams", "virtual_keys"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("on_meter_failure")
