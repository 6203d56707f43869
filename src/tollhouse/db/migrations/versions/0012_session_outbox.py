"""Agents: the outbox of a session's client events (``session_events.published_at``,
with a partial index over the ones not yet published).

Events written before this revision are taken as published: the redrive does not send
a session's history again after an upgrade (a message lost before it could only be
answered long after its time).

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from tollhouse.db.types import UTCDateTime

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

_UNPUBLISHED = sa.text("kind = 'conversation_event' AND published_at IS NULL")


def upgrade() -> None:
    with op.batch_alter_table("session_events") as batch:
        batch.add_column(sa.Column("published_at", UTCDateTime(), nullable=True))
    op.execute(
        "UPDATE session_events SET published_at = created_at WHERE kind = 'conversation_event'"
    )
    op.create_index(
        "ix_session_events_unpublished",
        "session_events",
        ["session_id", "seq"],
        sqlite_where=_UNPUBLISHED,
        postgresql_where=_UNPUBLISHED,
    )


def downgrade() -> None:
    op.drop_index("ix_session_events_unpublished", table_name="session_events")
    with op.batch_alter_table("session_events") as batch:
        batch.drop_column("published_at")
