"""Agent sessions and their durable event log.

Every event of a session — what the client sent, what the assistant streamed, the tool
calls and their results — is a row of ``session_events`` with the session's next
``seq``: the order a client reads and resumes by (``?after=<event_id>`` finds the seq of
that event). ``event_id`` is the primary key, so a consumer that sees an event twice
(the bus delivers at least once) writes it once.
"""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Column, Index, String, Table, UniqueConstraint

from tollhouse.db.meta import metadata
from tollhouse.db.types import UTCDateTime

agent_sessions = Table(
    "agent_sessions",
    metadata,
    Column("id", String(64), primary_key=True),
    # The tenant that owns it: the top of the key's chain (customer, else team, else key).
    Column("tenant_kind", String(16), nullable=False),
    Column("tenant_id", String(64), nullable=False),
    Column("key_id", String(64)),  # the key that opened it (its calls are governed by it)
    Column("persona_id", String(128)),
    Column("status", String(16), nullable=False),  # idle | running | cancelled
    Column("last_seq", BigInteger, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Index("ix_agent_sessions_tenant", "tenant_kind", "tenant_id", "updated_at"),
)

session_events = Table(
    "session_events",
    metadata,
    Column("event_id", String(80), primary_key=True),
    Column("session_id", String(80), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("kind", String(24), nullable=False),  # conversation_event | assistant_event | …
    Column("type", String(24), nullable=False),
    Column("body", JSON, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    UniqueConstraint("session_id", "seq", name="ux_session_events_seq"),
)
