"""Roll-ups: the usage ledger summed per UTC hour and per UTC day, for charts and tiles.

``usage_hourly`` and ``usage_daily`` hold, per bucket and (customer, team, key, model,
provider, status), the records' count, tokens, exact cost, streamed count and latency
histogram. A page reads a few thousand of their rows instead of millions of records.

They are exact because they are written with the ledger: ``roll_up`` runs in the
transaction of each recorder batch with the rows that batch inserted (the insert's
``RETURNING`` ids), and adds them with one upsert per table. A replayed or retried record
is skipped by the insert, so it is never summed twice; a batch that fails rolls back with
its roll-ups. ``tollhouse ledger verify`` compares them with the ledger and
``tollhouse ledger rebuild-rollups`` recomputes them (``ledger/verify.py``).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from itertools import accumulate
from typing import Any, Literal

from sqlalchemy import Dialect, Table, case, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.types import TypeEngine

from tollhouse.ledger.models import (
    DIMENSIONS,
    LATENCY_BOUNDS_MS,
    LATENCY_COLUMNS,
    MEASURES,
    PROJECTIONS,
    usage_daily,
    usage_daily_models,
    usage_daily_scopes,
    usage_hourly,
    usage_hourly_models,
    usage_hourly_scopes,
)

Grain = Literal["hour", "day"]
Dimension = Literal["customer", "team", "key", "model", "provider", "status"]

TABLES: dict[Grain, Table] = {"hour": usage_hourly, "day": usage_daily}
# The projections of each grain, by name (``models.PROJECTIONS``).
PROJECTION_TABLES: dict[Grain, dict[str, Table]] = {
    "hour": {"scopes": usage_hourly_scopes, "models": usage_hourly_models},
    "day": {"scopes": usage_daily_scopes, "models": usage_daily_models},
}
STEP: dict[Grain, timedelta] = {"hour": timedelta(hours=1), "day": timedelta(days=1)}
HOURLY_UP_TO = timedelta(hours=48)  # longer ranges read the daily table
OVERFLOW = len(LATENCY_BOUNDS_MS)  # the histogram's last bucket: above every bound
COLUMN: dict[Dimension, str] = {
    "customer": "customer_id",
    "team": "team_id",
    "key": "key_id",
    "model": "model",
    "provider": "provider",
    "status": "status",
}

# --- writing: with each recorder batch --------------------------------------------------

Key = tuple[Any, ...]  # (bucket, *DIMENSIONS)
_KEY = ("bucket", *DIMENSIONS)
_LAT0 = MEASURES.index(LATENCY_COLUMNS[0])


def floor(moment: datetime, grain: Grain) -> datetime:
    """The start of the UTC hour or day ``moment`` falls in."""
    moment = moment.astimezone(UTC)
    if grain == "hour":
        return moment.replace(minute=0, second=0, microsecond=0)
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def latency_bucket(latency_ms: float) -> int:
    """The histogram bucket of a latency: the first whose bound is at or above it."""
    if latency_ms != latency_ms:
        return OVERFLOW  # NaN: Postgres orders it above every number, so SQL does too
    return bisect_left(LATENCY_BOUNDS_MS, latency_ms)


def summed(rows: Iterable[dict[str, Any]]) -> dict[Grain, dict[Key, list[Any]]]:
    """The rows' measures summed per hour and per day: key → values in ``MEASURES``
    order. Records are summed into hours; the hours into days (fewer additions)."""
    hours: dict[Key, list[Any]] = {}
    for row in rows:
        created: datetime = row["created_at"].astimezone(UTC)
        key = (
            created.replace(minute=0, second=0, microsecond=0),
            row.get("customer_id") or "",
            row.get("team_id") or "",
            row.get("key_id") or "",
            row["model"],
            row["provider"],
            row["status"],
        )
        sums = hours.get(key)
        if sums is None:
            sums = hours[key] = _zero()
        sums[0] += 1
        sums[1] += row["prompt_tokens"]
        sums[2] += row["completion_tokens"]
        sums[3] += row["cached_tokens"]
        sums[4] += row["cost"]
        sums[5] += 1 if row["streamed"] else 0
        sums[_LAT0 + latency_bucket(row["latency_ms"])] += 1
    days: dict[Key, list[Any]] = {}
    for (hour, *dimensions), sums in hours.items():
        key = (hour.replace(hour=0), *dimensions)
        total = days.get(key)
        if total is None:
            days[key] = list(sums)
        else:
            for i, value in enumerate(sums):
                total[i] += value
    return {"hour": hours, "day": days}


def _zero() -> list[Any]:
    sums: list[Any] = [0] * len(MEASURES)
    sums[4] = Decimal(0)
    return sums


async def roll_up(conn: AsyncConnection, rows: Sequence[dict[str, Any]]) -> None:
    """Add ``rows`` — records this transaction inserted, each once — to both roll-ups.

    Keys are upserted in sorted order, hours before days, so that concurrent batches
    (two replicas on Postgres) lock shared rows in one order and cannot deadlock."""
    if not rows:
        return
    for grain, sums in summed(rows).items():
        await _add(conn, TABLES[grain], sums)
        for name, projection in PROJECTION_TABLES[grain].items():
            await _add(conn, projection, projected(sums, PROJECTIONS[name]))


async def _add(conn: AsyncConnection, table: Table, sums: dict[Key, list[Any]]) -> None:
    sql, bucket, cost, at = _upsert(table, conn.dialect)
    params = []
    for key in sorted(sums):
        values = list(sums[key])
        values[at] = cost(values[at])
        params.append((bucket(key[0]), *key[1:], *values))
    await conn.exec_driver_sql(sql, params)


_STATUS = 1 + DIMENSIONS.index("status")


def projected(sums: dict[Key, list[Any]], dimensions: tuple[str, ...]) -> dict[Key, list[Any]]:
    """Full roll-up sums (keys ``(bucket, *DIMENSIONS)``, values in ``MEASURES`` order)
    summed over ``dimensions`` alone, values in ``PROJECTED`` order: the status becomes
    the errors and refused counts, and a refusal's latency is left out."""
    where = [1 + DIMENSIONS.index(d) for d in dimensions]
    out: dict[Key, list[Any]] = {}
    for key, values in sums.items():
        status, requests = key[_STATUS], values[0]
        refused = status == "refused"
        row = [requests, requests if status != "success" else 0, requests if refused else 0,
               *values[1:_LAT0]]  # fmt: skip
        row += [0] * len(LATENCY_COLUMNS) if refused else values[_LAT0:]
        target = (key[0], *(key[i] for i in where))
        total = out.get(target)
        if total is None:
            out[target] = row
        else:
            for i, value in enumerate(row):
                total[i] += value
    return out


# The upsert of a table on a dialect: its SQL (positional parameters, its key's then its
# measures' order), the bind processors of its two typed columns, and where the cost is
# among the measures. Executed on the driver with tuples: SQLAlchemy's handling of each
# row's 43 parameters cost more than the upserts themselves (a recorder batch of 500
# records, 290 keys, on SQLite: 13 ms without roll-ups, 38 ms with them through
# SQLAlchemy's parameters, 24 ms so; before the projections).
Upsert = tuple[str, Callable[[Any], Any], Callable[[Any], Any], int]
_UPSERTS: dict[tuple[str, str, str], Upsert] = {}


def _upsert(table: Table, dialect: Dialect) -> Upsert:
    """``INSERT … ON CONFLICT (key) DO UPDATE SET m = table.m + excluded.m`` for every
    measure: additive, so the order batches commit in does not matter."""
    cached = (table.name, dialect.name, dialect.driver)
    found = _UPSERTS.get(cached)
    if found is None:
        key = [c.name for c in table.primary_key.columns]
        measures = [c.name for c in table.columns if c.name not in key]
        insert = (pg_insert if dialect.name == "postgresql" else sqlite_insert)(table)
        statement = insert.on_conflict_do_update(
            index_elements=key,
            set_={name: table.c[name] + insert.excluded[name] for name in measures},
        )
        columns = (*key, *measures)
        compiled = statement.compile(dialect=dialect, column_keys=list(columns))
        assert tuple(compiled.positiontup or ()) == columns, compiled.positiontup
        found = _UPSERTS[cached] = (
            str(compiled),
            _processor(table.c.bucket.type, dialect),
            _processor(table.c.cost.type, dialect),
            measures.index("cost"),
        )
    return found


def _processor(kind: TypeEngine[Any], dialect: Dialect) -> Callable[[Any], Any]:
    """What SQLAlchemy does to a value of ``kind`` before the driver sees it (a type
    with ``process_bind_param``, as both are, always has a processor)."""
    process = kind.dialect_impl(dialect).bind_processor(dialect)
    assert process is not None
    return process


# --- reading: what the dashboard asks ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class RollupFilter:
    since: datetime  # inclusive, aware; aligned to the grain (``snap``)
    until: datetime  # exclusive, aware; aligned to the grain
    grain: Grain
    customer_id: str | None = None
    team_id: str | None = None
    key_ids: tuple[str, ...] = ()  # empty: all keys
    model: str | None = None
    provider: str | None = None

    def __post_init__(self) -> None:
        # A bound inside a bucket would silently count the whole bucket or none of it.
        if self.since.tzinfo is None or self.until.tzinfo is None:
            raise ValueError("since and until must be aware datetimes")
        if snap(self.since, self.until, self.grain) != (self.since, self.until):
            raise ValueError(f"since and until must be aligned to the {self.grain} (snap())")
        if self.since > self.until:
            raise ValueError("since is after until")


@dataclass(frozen=True, slots=True)
class Totals:
    requests: int
    errors: int  # status other than success (refusals included)
    prompt_tokens: int
    completion_tokens: int
    cost: Decimal
    # Of requests that reached a provider: a refusal's few microseconds are the
    # gateway's, not the latency anyone waits on a model for. None: no such request.
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    refused: int = 0  # turned away before any provider (a budget, a limit, a policy)


@dataclass(frozen=True, slots=True)
class Point:
    bucket: datetime
    group: str  # the dimension's id or value; '' for none (a key-less record, no group)
    requests: int
    errors: int
    tokens: int  # prompt + completion
    cost: Decimal


def choose_grain(since: datetime, until: datetime) -> Grain:
    """Hours for a range up to 48 h, days beyond (a chart of at most ~100 points)."""
    return "hour" if until - since <= HOURLY_UP_TO else "day"


def snap(since: datetime, until: datetime, grain: Grain) -> tuple[datetime, datetime]:
    """``since`` floored and ``until`` ceiled to the grain, in UTC."""
    end = floor(until, grain)
    if end != until:
        end += STEP[grain]
    return floor(since, grain), end


def percentile(histogram: Sequence[int], q: float) -> float | None:
    """The ``q`` quantile (0 to 1) of a latency histogram in ms, interpolated linearly
    inside its bucket (from the bucket below's bound, 0 for the first); in the overflow
    bucket, its lower bound. ``None`` for an empty histogram."""
    if len(histogram) != OVERFLOW + 1:
        raise ValueError(f"a histogram has {OVERFLOW + 1} buckets, not {len(histogram)}")
    if not 0 <= q <= 1:
        raise ValueError(f"q must be between 0 and 1, not {q}")
    cumulative = list(accumulate(histogram))
    total = cumulative[-1]
    if total == 0:
        return None
    rank = min(q * total, total)  # a float product may round past the total
    # The bucket the rank falls in; for q = 0, the first bucket with a request.
    i = bisect_left(cumulative, rank) if rank > 0 else bisect_right(cumulative, 0)
    low = float(LATENCY_BOUNDS_MS[i - 1]) if i else 0.0
    if i == OVERFLOW:
        return low
    below = cumulative[i] - histogram[i]
    return low + (LATENCY_BOUNDS_MS[i] - low) * (rank - below) / histogram[i]


def source(where: RollupFilter, group: Dimension | None = None) -> tuple[Table, bool]:
    """The smallest table that answers: a projection when the filters and the grouping
    stay within its dimensions, else the full table (``True``: the full one)."""
    # '' is a filter too: the records of no customer (or team, key).
    scoped = where.customer_id is not None or where.team_id is not None or bool(where.key_ids)
    modelled = where.model is not None or where.provider is not None
    wanted = {group} if group is not None else set()
    projections = PROJECTION_TABLES[where.grain]
    if group == "status" or (scoped and modelled):
        return TABLES[where.grain], True
    if scoped or wanted & {"customer", "team", "key"}:
        if modelled or wanted & {"model", "provider"}:
            return TABLES[where.grain], True
        return projections["scopes"], False
    return projections["models"], False  # the fewest rows: a dozen models, not keys


def _clauses(table: Table, where: RollupFilter) -> list[Any]:
    c = table.c
    clauses = [c.bucket >= where.since, c.bucket < where.until]
    for name, value in (
        ("customer_id", where.customer_id),
        ("team_id", where.team_id),
        ("model", where.model),
        ("provider", where.provider),
    ):
        if value is not None:
            clauses.append(c[name] == value)
    if where.key_ids:
        clauses.append(c.key_id.in_(where.key_ids))
    return clauses


def _errors(table: Table, full: bool) -> Any:
    if not full:
        return func.sum(table.c.errors)
    return func.sum(case((table.c.status != "success", table.c.requests), else_=0))


def _refused(table: Table, full: bool) -> Any:
    if not full:
        return _sum(table.c.refused)
    return _sum(case((table.c.status == "refused", table.c.requests), else_=0))


def _latency(table: Table, full: bool, name: str) -> Any:
    if not full:
        return _sum(table.c[name])
    return _sum(case((table.c.status != "refused", table.c[name]), else_=0))


def _sum(column: Any) -> Any:
    return func.coalesce(func.sum(column), 0)


def _ordered(column: Any, dialect: str) -> Any:
    """Ids in code-point order on both databases (Postgres sorts text by its locale)."""
    return column.collate("C") if dialect == "postgresql" else column


async def totals(conn: AsyncConnection, where: RollupFilter) -> Totals:
    """Requests, errors, tokens, exact cost and latency percentiles over the range."""
    t, full = source(where)
    query = select(
        _sum(t.c.requests),
        func.coalesce(_errors(t, full), 0),
        _sum(t.c.prompt_tokens),
        _sum(t.c.completion_tokens),
        _sum(t.c.cost),
        _refused(t, full),
        *(_latency(t, full, name) for name in LATENCY_COLUMNS),
    ).where(*_clauses(t, where))
    row = (await conn.execute(query)).one()
    requests, errors, prompt, completion, cost, refused, *histogram = row
    counts = [int(n) for n in histogram]
    return Totals(
        requests=int(requests),
        errors=int(errors),
        prompt_tokens=int(prompt),
        completion_tokens=int(completion),
        cost=Decimal(cost),
        latency_p50_ms=percentile(counts, 0.5),
        latency_p95_ms=percentile(counts, 0.95),
        refused=int(refused),
    )


async def series(
    conn: AsyncConnection, where: RollupFilter, group: Dimension | None
) -> list[Point]:
    """One point per bucket and group present, by bucket then group (code points)."""
    t, full = source(where, group)
    keys = [t.c.bucket] if group is None else [t.c.bucket, t.c[COLUMN[group]]]
    query = (
        select(
            *keys,
            func.sum(t.c.requests),
            _errors(t, full),
            func.sum(t.c.prompt_tokens + t.c.completion_tokens),
            func.sum(t.c.cost),
        )
        .where(*_clauses(t, where))
        .group_by(*keys)
        .order_by(t.c.bucket, *(_ordered(k, conn.dialect.name) for k in keys[1:]))
    )
    points = []
    for row in await conn.execute(query):
        bucket, *rest = row
        name = "" if group is None else rest.pop(0)
        requests, errors, tokens, cost = rest
        points.append(Point(bucket, name, int(requests), int(errors), int(tokens), Decimal(cost)))
    return points


async def top_groups(
    conn: AsyncConnection, where: RollupFilter, group: Dimension, limit: int
) -> list[tuple[str, Decimal, int]]:
    """The ``limit`` groups that cost most: (group, cost, requests), by cost descending
    (ties by group, code points)."""
    if limit < 0:
        raise ValueError(f"limit must be 0 or more, not {limit}")
    t, _ = source(where, group)
    column = t.c[COLUMN[group]]
    cost = func.sum(t.c.cost)
    query = (
        select(column, cost, func.sum(t.c.requests))
        .where(*_clauses(t, where))
        .group_by(column)
        .order_by(cost.desc(), _ordered(column, conn.dialect.name))
        .limit(limit)
    )
    return [(name, Decimal(c), int(n)) for name, c, n in await conn.execute(query)]


def every_projection() -> list[Table]:
    """The projection tables of both grains."""
    return [table for grain in PROJECTION_TABLES.values() for table in grain.values()]
