"""The usage ledger's tables: ``usage_records``, one row per request that reached a
provider (or tried to), and its roll-ups ``usage_hourly`` and ``usage_daily``, the same
records summed per UTC hour and day (``ledger/rollups.py``, docs/ledger.md#roll-ups)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    text,
)

from tollhouse.db.meta import metadata
from tollhouse.db.types import Money, UTCDateTime

usage_records = Table(
    "usage_records",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("key_id", String(64)),
    Column("team_id", String(64)),
    Column("customer_id", String(64)),
    Column("endpoint", String(32), nullable=False),
    Column("provider", Text, nullable=False),
    Column("model", Text, nullable=False),
    Column("prompt_tokens", BigInteger, nullable=False, default=0),
    Column("completion_tokens", BigInteger, nullable=False, default=0),
    Column("cached_tokens", BigInteger, nullable=False, default=0),
    Column("cost", Money(), nullable=False),
    Column("priced", Boolean, nullable=False, default=True),
    Column("latency_ms", Float, nullable=False),
    Column("status", String(16), nullable=False),
    Column("http_status", Integer, nullable=False),
    Column("streamed", Boolean, nullable=False, default=False),
    Column("upstream_request_id", Text),
    Column("error", Text),
    Column("credit_account_id", String(64)),  # the prepaid account that paid, if any
    # The key of the journal post that charged it to that account (credits/posting.py).
    Column("credit_post", String(255)),
    # An agent session's model call: its session and persona (agent token budgets).
    Column("session_id", String(64)),
    Column("persona_id", String(128)),
    Index("ix_usage_records_created_at_id", "created_at", "id"),
    Index("ix_usage_records_key_id_created_at", "key_id", "created_at"),
    Index("ix_usage_records_team_id_created_at", "team_id", "created_at"),
    Index("ix_usage_records_customer_id_created_at", "customer_id", "created_at"),
    Index("ix_usage_records_model_created_at", "model", "created_at"),
    Index("ix_usage_records_credit_account_id_created_at", "credit_account_id", "created_at"),
    Index(
        "ix_usage_records_session_id",
        "session_id",
        sqlite_where=text("session_id IS NOT NULL"),
        postgresql_where=text("session_id IS NOT NULL"),
    ),
    Index(
        "ix_usage_records_credit_post",
        "credit_post",
        sqlite_where=text("credit_post IS NOT NULL"),
        postgresql_where=text("credit_post IS NOT NULL"),
    ),
)

# The roll-ups' latency histogram: a record goes to the first bucket whose upper bound
# (ms) is at or above its latency, past the last one to the overflow bucket. Bounds
# close enough that interpolating inside a bucket stays within a few percent.
LATENCY_BOUNDS_MS = (1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 70, 100, 150, 200, 300, 500, 700,
                     1000, 1500, 2000, 3000, 5000, 7000, 10000, 15000, 20000, 30000, 60000,
                     120000)  # fmt: skip
LATENCY_COLUMNS = tuple(f"lat_{i:02d}" for i in range(len(LATENCY_BOUNDS_MS) + 1))
# The primary key after ``bucket``: what a roll-up row sums over. The scope ids are
# part of the key, so none is '' there, not NULL.
DIMENSIONS = ("customer_id", "team_id", "key_id", "model", "provider", "status")
SCOPES = ("customer_id", "team_id", "key_id")
MEASURES = (
    "requests",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cost",
    "streamed",
    *LATENCY_COLUMNS,
)


def _rollup(name: str) -> Table:
    """A roll-up table: the records of each (bucket, dimensions) summed, ``bucket`` the
    start of the UTC hour or day (leading the key: every read is a range of it)."""
    return Table(
        name,
        metadata,
        Column("bucket", UTCDateTime(), nullable=False),
        *(Column(scope, String(64), nullable=False) for scope in SCOPES),
        Column("model", Text, nullable=False),
        Column("provider", Text, nullable=False),
        Column("status", String(16), nullable=False),
        Column("requests", BigInteger, nullable=False),
        Column("prompt_tokens", BigInteger, nullable=False),
        Column("completion_tokens", BigInteger, nullable=False),
        Column("cached_tokens", BigInteger, nullable=False),
        Column("cost", Money(), nullable=False),
        Column("streamed", BigInteger, nullable=False),  # how many of them were SSE
        *(Column(column, BigInteger, nullable=False) for column in LATENCY_COLUMNS),
        PrimaryKeyConstraint("bucket", *DIMENSIONS),
    )


usage_hourly = _rollup("usage_hourly")
usage_daily = _rollup("usage_daily")


# The projections: the same sums over fewer dimensions, for the reads that need no more
# (the overview's totals, its series by scope or by model). At ten million records the
# full tables keep a row per key × model × status × bucket; these keep one per key, or
# per model, and count errors and refusals as measures instead of keying on the status.
PROJECTIONS: dict[str, tuple[str, ...]] = {"scopes": SCOPES, "models": ("provider", "model")}
PROJECTED = (
    "requests",
    "errors",  # status other than success
    "refused",  # turned away before any provider
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cost",
    "streamed",
    *LATENCY_COLUMNS,  # of requests that reached a provider (refusals left out)
)


def _projection(name: str, dimensions: tuple[str, ...]) -> Table:
    return Table(
        name,
        metadata,
        Column("bucket", UTCDateTime(), nullable=False),
        *(Column(d, String(64) if d in SCOPES else Text, nullable=False) for d in dimensions),
        *(Column(m, Money() if m == "cost" else BigInteger, nullable=False) for m in PROJECTED),
        PrimaryKeyConstraint("bucket", *dimensions),
    )


usage_hourly_scopes = _projection("usage_hourly_scopes", PROJECTIONS["scopes"])
usage_daily_scopes = _projection("usage_daily_scopes", PROJECTIONS["scopes"])
usage_hourly_models = _projection("usage_hourly_models", PROJECTIONS["models"])
usage_daily_models = _projection("usage_daily_models", PROJECTIONS["models"])
