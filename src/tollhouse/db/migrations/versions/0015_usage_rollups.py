"""Ledger: the hourly and daily roll-ups of usage (``usage_hourly``, ``usage_daily``),
back-filled from the records already in ``usage_records``, and their projections over
scopes and over models (``usage_{hourly,daily}_{scopes,models}``), back-filled from them.

From here on the recorder adds each batch to them in the batch's transaction
(``ledger/rollups.py``). Records written after this revision by a server of an older
version are not rolled up: ``tollhouse ledger verify`` names the buckets and
``tollhouse ledger rebuild-rollups`` repairs them (docs/ledger.md#roll-ups).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-01
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op

from tollhouse.db.types import Money, UTCDateTime

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None

# As they were at this revision (ledger/models.py may move on).
_BOUNDS = (1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 70, 100, 150, 200, 300, 500, 700, 1000, 1500,
           2000, 3000, 5000, 7000, 10000, 15000, 20000, 30000, 60000, 120000)  # fmt: skip
_LATENCIES = [f"lat_{i:02d}" for i in range(len(_BOUNDS) + 1)]
_KEY = ["bucket", "customer_id", "team_id", "key_id", "model", "provider", "status"]
_TABLES = {"usage_hourly": "hour", "usage_daily": "day"}


def _columns() -> list[sa.Column[Any]]:
    return [
        sa.Column("bucket", UTCDateTime(), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("team_id", sa.String(64), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=False),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("provider", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger(), nullable=False),
        sa.Column("completion_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cached_tokens", sa.BigInteger(), nullable=False),
        sa.Column("cost", Money(), nullable=False),
        sa.Column("streamed", sa.BigInteger(), nullable=False),
        *(sa.Column(name, sa.BigInteger(), nullable=False) for name in _LATENCIES),
    ]


def _bucket(dialect: str, grain: str) -> str:
    """The start of the record's UTC hour or day, stored as the column type stores it:
    SQLite keeps UTCDateTime as naive-UTC text with microseconds."""
    if dialect == "sqlite":
        hour = "%H" if grain == "hour" else "00"
        return f"strftime('%Y-%m-%d {hour}:00:00.000000', created_at)"
    return f"date_trunc('{grain}', created_at AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'"


def _latencies() -> list[str]:
    """One count per histogram bucket: latency at or below its bound and above the one
    before; the last bucket, above every bound (NaN too, which Postgres sorts there)."""
    sums = []
    low = None
    for bound in _BOUNDS:
        above = f"latency_ms > {low} AND " if low is not None else ""
        sums.append(f"SUM(CASE WHEN {above}latency_ms <= {bound} THEN 1 ELSE 0 END)")
        low = bound
    sums.append(f"SUM(CASE WHEN latency_ms > {low} THEN 1 ELSE 0 END)")
    return sums


def _backfill(table: str, dialect: str) -> str:
    columns = [
        *_KEY,
        "requests",
        "prompt_tokens",
        "completion_tokens",
        "cached_tokens",
        "cost",
        "streamed",
        *_LATENCIES,
    ]
    sums = [
        "COUNT(*)",
        "SUM(prompt_tokens)",
        "SUM(completion_tokens)",
        "SUM(cached_tokens)",
        "SUM(cost)",  # exact: NUMERIC on Postgres, integer nano-dollars on SQLite
        "SUM(CASE WHEN streamed THEN 1 ELSE 0 END)",
        *_latencies(),
    ]
    key = ", ".join(_KEY)
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) "
        f"SELECT {key}, {', '.join(sums)} FROM ("
        f"SELECT {_bucket(dialect, _TABLES[table])} AS bucket, "
        "COALESCE(customer_id, '') AS customer_id, COALESCE(team_id, '') AS team_id, "
        "COALESCE(key_id, '') AS key_id, model, provider, status, prompt_tokens, "
        "completion_tokens, cached_tokens, cost, streamed, latency_ms FROM usage_records"
        f") AS records GROUP BY {key}"
    )


_PROJECTIONS = {
    "scopes": (
        ("customer_id", sa.String(64)),
        ("team_id", sa.String(64)),
        ("key_id", sa.String(64)),
    ),
    "models": (("provider", sa.Text()), ("model", sa.Text())),
}
_PROJECTED = ["requests", "errors", "refused", "prompt_tokens", "completion_tokens",
              "cached_tokens", "cost", "streamed", *_LATENCIES]  # fmt: skip


def _projected(source: str, target: str, dimensions: list[str]) -> str:
    """A projection's rows from its full table: the status becomes the errors and
    refused counts, and a refusal's latency is left out (``ledger/verify.py``)."""
    sums = [
        "SUM(requests)",
        "SUM(CASE WHEN status <> 'success' THEN requests ELSE 0 END)",
        "SUM(CASE WHEN status = 'refused' THEN requests ELSE 0 END)",
        "SUM(prompt_tokens)",
        "SUM(completion_tokens)",
        "SUM(cached_tokens)",
        "SUM(cost)",
        "SUM(streamed)",
        *(f"SUM(CASE WHEN status <> 'refused' THEN {name} ELSE 0 END)" for name in _LATENCIES),
    ]
    key = ", ".join(["bucket", *dimensions])
    return (
        f"INSERT INTO {target} ({key}, {', '.join(_PROJECTED)}) "
        f"SELECT {key}, {', '.join(sums)} FROM {source} GROUP BY {key}"
    )


def _projection(name: str, dimensions: tuple[tuple[str, Any], ...]) -> None:
    op.create_table(
        name,
        sa.Column("bucket", UTCDateTime(), nullable=False),
        *(sa.Column(d, kind, nullable=False) for d, kind in dimensions),
        *(
            sa.Column(m, Money() if m == "cost" else sa.BigInteger(), nullable=False)
            for m in _PROJECTED
        ),
        sa.PrimaryKeyConstraint("bucket", *(d for d, _ in dimensions), name=op.f(f"pk_{name}")),
    )


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        # The back-fill reads the whole ledger: longer, at millions of records, than the
        # statement_timeout the server's connections get (10 s by default).
        op.execute("SET LOCAL statement_timeout = 0")
    for table in _TABLES:
        op.create_table(
            table, *_columns(), sa.PrimaryKeyConstraint(*_KEY, name=op.f(f"pk_{table}"))
        )
        op.execute(_backfill(table, dialect))
        for projection, dimensions in _PROJECTIONS.items():
            name = f"{table}_{projection}"
            _projection(name, dimensions)
            op.execute(_projected(table, name, [d for d, _ in dimensions]))


def downgrade() -> None:
    for table in ("usage_daily", "usage_hourly"):
        for projection in _PROJECTIONS:
            op.drop_table(f"{table}_{projection}")
        op.drop_table(table)
