"""Agent sessions and their durable event log.

Every event of a session — what the client sent, what the assistant streamed, the tool
calls and their results — is a row of ``session_events`` with the session's next
``seq``: the order a client reads and resumes by (``?after=<event_id>`` finds the seq of
that event). ``event_id`` is the primary key, so a consumer that sees an event twice
(the bus delivers at least once) writes it once.

A client's event (``conversation_event``) is also the outbox entry of its publication on
``conversation.inbound``: ``published_at`` stays NULL until the bus has taken it, and the
redrive (``agents/outbox.py``) publishes those a failed or interrupted request left. The
partial index holds only those, so finding them costs nothing however long the log.
"""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Column, Index, String, Table, UniqueConstraint, text

from tollhouse.db.meta import metadata
from tollhouse.db.types import UTCDateTime

# The outbox: the client events not yet on the bus (the partial index's condition).
UNPUBLISHED = "kind = 'conversation_event' AND published_at IS NULL"

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
    # When a conversation_event went onto the bus (NULL: not yet). Other kinds are
    # published by the worker that writes them, which runs a turn again rather than
    # redrive it, so theirs stays NULL and the index below leaves them out.
    Column("published_at", UTCDateTime()),
    UniqueConstraint("session_id", "seq", name="ux_session_events_seq"),
    Index(
        "ix_session_events_unpublished",
        "session_id",
        "seq",
        sqlite_where=text(UNPUBLISHED),
        postgresql_where=text(UNPUBLISHED),
    ),
)
