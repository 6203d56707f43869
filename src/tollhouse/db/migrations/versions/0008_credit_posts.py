"""Usage is posted to the credit journal once per account per ledger batch: each usage
record names the post that charged it (``credit_post``, indexed where set).

Posts booked before this revision (one per request, key ``post:<request id>``) are
linked to their record, so every paid record names its post.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_SET = sa.text("credit_post IS NOT NULL")


def upgrade() -> None:
    with op.batch_alter_table("usage_records") as batch:
        batch.add_column(sa.Column("credit_post", sa.String(255), nullable=True))
    op.create_index(
        "ix_usage_records_credit_post",
        "usage_records",
        ["credit_post"],
        sqlite_where=_SET,
        postgresql_where=_SET,
    )
    op.execute(
        "UPDATE usage_records SET credit_post = 'post:' || id "
        "WHERE credit_account_id IS NOT NULL AND EXISTS ("
        "SELECT 1 FROM credit_transactions t WHERE t.key = 'post:' || usage_records.id "
        "AND t.account_id = usage_records.credit_account_id AND t.kind = 'post')"
    )


def downgrade() -> None:
    op.drop_index("ix_usage_records_credit_post", table_name="usage_records")
    with op.batch_alter_table("usage_records") as batch:
        batch.drop_column("credit_post")
