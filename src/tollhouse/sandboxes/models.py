"""The sandbox pool, its leases and the broker tokens tracks present.

A lease lives on its sandbox's row (``track_id``, ``allocated_at``, ``expires_at``):
a sandbox has at most one at a time, and the partial unique index on ``track_id`` over
``allocated`` rows is what makes "one sandbox per track" true under any concurrency, on
any number of replicas — the database refuses a second, no read has to be trusted.
"""

from __future__ import annotations

from sqlalchemy import JSON, Column, Index, Integer, String, Table, Text, text

from tollhouse.db.meta import metadata
from tollhouse.db.types import UTCDateTime

STATUSES = ("available", "allocated", "pending_deletion", "deleting", "failed")

sandboxes = Table(
    "sandboxes",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("backend", String(16), nullable=False),  # local | static
    Column("status", String(16), nullable=False),  # STATUSES
    Column("external_id", String(256)),  # static: the environment's own id
    Column("url", Text),  # static: where the track reaches it
    Column("secret", Text),  # static: its credentials, encrypted (SecretBox)
    Column("uid", Integer, unique=True),  # local: the uid its commands run as (root only)
    Column("track_id", String(128)),  # the lease: who holds it
    Column("purpose", String(8)),  # lab | tool
    Column("token_id", String(64)),  # the broker token that leased it
    Column("idempotency_key", String(128)),
    Column("allocated_at", UTCDateTime()),
    Column("expires_at", UTCDateTime()),  # absolute: allocated_at + lab duration + grace
    Column("error", Text),  # failed: why
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    # One live lease per track: the constraint, not a read, enforces it.
    Index(
        "ux_sandboxes_live_track",
        "track_id",
        unique=True,
        sqlite_where=text("status = 'allocated'"),
        postgresql_where=text("status = 'allocated'"),
    ),
    # A live lease by its Idempotency-Key: an ask with a key (and the lease statement's
    # plan for any ask, keyed or not) finds the track that holds the key without reading
    # every live lease. Not unique: a key on another track's lease is refused by a read.
    Index(
        "ix_sandboxes_live_key",
        "idempotency_key",
        sqlite_where=text("status = 'allocated' AND idempotency_key IS NOT NULL"),
        postgresql_where=text("status = 'allocated' AND idempotency_key IS NOT NULL"),
    ),
    # What allocation picks from, oldest first: the free rows only.
    Index(
        "ix_sandboxes_available",
        "created_at",
        "id",
        sqlite_where=text("status = 'available'"),
        postgresql_where=text("status = 'available'"),
    ),
    # What the reaper scans. Their predicates are not implied by a track's lookup
    # (``status = 'allocated' AND track_id = …``), so that lookup can only use its own
    # unique index: on a freshly analysed pool the planner otherwise scanned every live
    # lease through the expiry index (docs/benchmarks.md, *Sandboxes*).
    Index(
        "ix_sandboxes_live_expires_at",
        "expires_at",
        sqlite_where=text("status = 'allocated' AND expires_at IS NOT NULL"),
        postgresql_where=text("status = 'allocated' AND expires_at IS NOT NULL"),
    ),
    Index(
        "ix_sandboxes_ending",
        "updated_at",
        sqlite_where=text("status IN ('pending_deletion', 'deleting')"),
        postgresql_where=text("status IN ('pending_deletion', 'deleting')"),
    ),
)

# Track-side credentials, separate from the admin key: shown once, stored as a SHA-256.
broker_tokens = Table(
    "broker_tokens",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("hint", String(32), nullable=False),
    Column("tags", JSON, nullable=False),  # what sandbox.allocate policies match
    Column("created_at", UTCDateTime(), nullable=False),
    Column("revoked_at", UTCDateTime()),
)
