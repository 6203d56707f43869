"""Webhook and Slack URLs encrypted at rest: ``notification_channels.url_secret``.

The migration only adds the column: it cannot reach ``TOLLHOUSE_SECRET_KEY``, so URLs
stored in plaintext are encrypted lazily by the first process that has the key
(``alerts/urls.py``: at dispatcher start, on a channel read, or by ``tollhouse secrets
rotate``). Downgrading drops the encrypted URLs: the channels keep only the redacted
form and need their URL sent again.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # batch_alter_table: SQLite cannot alter a table in place.
    with op.batch_alter_table("notification_channels") as batch:
        batch.add_column(sa.Column("url_secret", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("notification_channels") as batch:
        batch.drop_column("url_secret")
