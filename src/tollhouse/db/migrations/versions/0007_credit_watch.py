"""Auto top-ups and balance alerts: one pending auto top-up per account (a partial unique
index), the count of balance-alert crossings, and why an auto top-up was skipped.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_PENDING_AUTO = sa.text("kind = 'auto' AND status = 'pending'")


def upgrade() -> None:
    # batch_alter_table: SQLite cannot alter a table in place.
    with op.batch_alter_table("credit_accounts") as batch:
        batch.add_column(
            sa.Column("alert_crossings", sa.Integer(), server_default=sa.text("0"), nullable=False)
        )
        batch.add_column(sa.Column("auto_topup_skipped_reason", sa.Text(), nullable=True))
    op.create_index(
        "ux_credit_topups_pending_auto",
        "credit_topups",
        ["account_id"],
        unique=True,
        sqlite_where=_PENDING_AUTO,
        postgresql_where=_PENDING_AUTO,
    )


def downgrade() -> None:
    op.drop_index("ux_credit_topups_pending_auto", table_name="credit_topups")
    with op.batch_alter_table("credit_accounts") as batch:
        batch.drop_column("auto_topup_skipped_reason")
        batch.drop_column("alert_crossings")
