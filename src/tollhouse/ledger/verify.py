"""The roll-ups against the ledger: every row checked, and rebuilt from the records.

``recomputed(dialect, grain)`` is what a roll-up table must hold: ``usage_records``
grouped by UTC hour or day and dimensions in SQL, the same sums the migration back-filled
and ``rollups.roll_up`` adds batch by batch.

- ``verify_rollups(conn)`` compares each table with it, every row and every measure, in
  one statement per table (the database joins; only differences come back): a row the
  ledger has and the table lacks is *missing*, the reverse *extra*, a row whose measures
  disagree *different*. Run it in a read snapshot (``db/snapshot.py``): a batch
  committing between the two reads would otherwise look like a difference.
- ``rebuild(conn, since)`` deletes the roll-ups from ``since`` (a UTC day) on and inserts
  them again from the records, in the caller's transaction.

The projections (``usage_*_scopes``, ``usage_*_models``) are the full tables summed over
fewer dimensions (``projected_from``): each is checked against the ledger's records as
well, and rebuilt from its freshly rebuilt full table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    Select,
    Table,
    and_,
    case,
    func,
    literal_column,
    null,
    or_,
    select,
    text,
    type_coerce,
    union_all,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from tollhouse.db.types import UTCDateTime
from tollhouse.ledger.models import (
    DIMENSIONS,
    LATENCY_BOUNDS_MS,
    LATENCY_COLUMNS,
    MEASURES,
    PROJECTED,
    PROJECTIONS,
    SCOPES,
    usage_records,
)
from tollhouse.ledger.rollups import PROJECTION_TABLES, TABLES, Grain, floor
from tollhouse.money import format_usd

LISTED = 1000  # differing rows listed per table at most; past it, the report says "more"
_KEY = ("bucket", *DIMENSIONS)
_u = usage_records.c


@dataclass(frozen=True, slots=True)
class Difference:
    """A roll-up row that is not what the ledger sums to: ``expected`` is the ledger's
    (the measures that differ), ``found`` the table's."""

    table: str  # usage_hourly, usage_daily, or one of their projections
    check: str  # missing | extra | different
    bucket: datetime
    customer_id: str  # '' for none, as stored
    team_id: str
    key_id: str
    model: str
    provider: str
    status: str
    expected: str
    found: str

    @property
    def group(self) -> str:
        """The dimensions in one line, ``-`` for none."""
        scopes = f"customer={self.customer_id or '-'} team={self.team_id or '-'}"
        return f"{scopes} key={self.key_id or '-'} {self.model}@{self.provider} {self.status}"


@dataclass(slots=True)
class Report:
    rows: dict[str, int] = field(default_factory=dict)  # rows per table, as stored
    differences: list[Difference] = field(default_factory=list)
    more: bool = False  # a table had more than LISTED differences: not all are listed

    @property
    def ok(self) -> bool:
        return not self.differences


def bucket_of(created_at: Any, grain: Grain, dialect: str) -> Any:
    """The start of the UTC hour or day of ``created_at``, as the column stores it: on
    SQLite, UTCDateTime is naive-UTC text with microseconds (the roll-ups' key must be
    the same text whoever wrote the row)."""
    if dialect == "sqlite":
        hour = "%H" if grain == "hour" else "00"
        expression = func.strftime(f"%Y-%m-%d {hour}:00:00.000000", created_at)
    else:
        utc: Any = literal_column("'UTC'")
        wall = func.date_trunc(literal_column(f"'{grain}'"), func.timezone(utc, created_at))
        expression = func.timezone(utc, wall)
    return type_coerce(expression, UTCDateTime())


def recomputed(dialect: str, grain: Grain, since: datetime | None = None) -> Select[Any]:
    """The roll-up rows of ``grain`` from the ledger's records (created ``since`` on, a
    bucket boundary): columns in the tables' order, ``_KEY`` then ``MEASURES``."""
    none: Any = literal_column("''")
    records = select(
        bucket_of(_u.created_at, grain, dialect).label("bucket"),
        *(func.coalesce(_u[scope], none).label(scope) for scope in SCOPES),
        _u.model,
        _u.provider,
        _u.status,
        _u.prompt_tokens,
        _u.completion_tokens,
        _u.cached_tokens,
        _u.cost,
        _u.streamed,
        _u.latency_ms,
    )
    if since is not None:
        records = records.where(_u.created_at >= since)
    r = records.subquery("records")
    latency = r.c.latency_ms
    histogram = []
    low = None
    for bound in (*LATENCY_BOUNDS_MS, None):
        # At or below the bound and above the one before; the last: above every bound
        # (and NaN, which Postgres sorts there, as rollups.latency_bucket does).
        inside = []
        if low is not None:
            inside.append(latency > literal_column(str(low)))
        if bound is not None:
            inside.append(latency <= literal_column(str(bound)))
        histogram.append(func.sum(case((and_(*inside), 1), else_=0)))
        low = bound
    sums = [
        func.count(),
        func.sum(r.c.prompt_tokens),
        func.sum(r.c.completion_tokens),
        func.sum(r.c.cached_tokens),
        func.sum(r.c.cost),  # exact: NUMERIC on Postgres, integer nano-dollars on SQLite
        func.sum(case((r.c.streamed, 1), else_=0)),
        *histogram,
    ]
    key = [r.c[name] for name in _KEY]
    measures = [value.label(name) for value, name in zip(sums, MEASURES, strict=True)]
    return select(*key, *measures).group_by(*key)


def projected_from(full: Any, dimensions: tuple[str, ...], since: Any = None) -> Select[Any]:
    """A projection's rows from rows of its grain's full table (the table itself, or what
    it must hold: ``recomputed(…).subquery()``), as ``rollups.projected`` sums them: the
    status becomes the errors and refused counts, a refusal's latency is left out."""
    c = full.c
    keys = [c.bucket, *(c[d] for d in dimensions)]

    def where(condition: Any, column: Any) -> Any:
        return func.sum(case((condition, column), else_=0))

    sums = [
        func.sum(c.requests),
        where(c.status != "success", c.requests),
        where(c.status == "refused", c.requests),
        *(func.sum(c[m]) for m in ("prompt_tokens", "completion_tokens", "cached_tokens")),
        func.sum(c.cost),
        func.sum(c.streamed),
        *(where(c.status != "refused", c[name]) for name in LATENCY_COLUMNS),
    ]
    query = select(*keys, *(v.label(n) for v, n in zip(sums, PROJECTED, strict=True)))
    if since is not None:
        query = query.where(c.bucket >= since)
    return query.group_by(*keys)


async def verify_rollups(conn: AsyncConnection, listed: int = LISTED) -> Report:
    """The differences between the roll-up tables and the ledger's records (and between
    the projections and their full tables), the first ``listed`` of each table (by
    bucket and dimensions)."""
    await unbounded(conn)
    report = Report()
    checks: list[tuple[Table, Select[Any], tuple[str, ...], tuple[str, ...]]] = []
    for grain, table in TABLES.items():
        ledger = recomputed(conn.dialect.name, grain)
        checks.append((table, ledger, _KEY, MEASURES))
        for name, projection in PROJECTION_TABLES[grain].items():
            # Against the ledger too, not the full table: a damaged row is reported
            # where it is, and only there.
            key = ("bucket", *PROJECTIONS[name])
            wanted = projected_from(ledger.subquery(), PROJECTIONS[name])
            checks.append((projection, wanted, key, PROJECTED))
    for table, expected, key, measures in checks:
        count = select(func.count()).select_from(table)
        report.rows[str(table.name)] = int((await conn.execute(count)).scalar_one())
        found = await _compare(conn, expected, table, key, measures, listed + 1)
        if len(found) > listed:
            report.more = True
        report.differences += found[:listed]
    return report


async def _compare(
    conn: AsyncConnection,
    wanted: Select[Any],
    table: Table,
    key: tuple[str, ...],
    measures: tuple[str, ...],
    limit: int,
) -> list[Difference]:
    expected = wanted.cte("expected")
    e, s = expected.c, table.c
    columns = [*key, *measures]
    stored = [s[n].label(f"s_{n}") for n in columns]
    missing_or_different = (
        select(*(e[n].label(f"e_{n}") for n in columns), *stored)
        .select_from(expected.outerjoin(table, and_(*(e[n] == s[n] for n in key))))
        .where(or_(s.bucket.is_(None), *(e[n] != s[n] for n in measures)))
    )
    # Keys the ledger does not have, by EXCEPT rather than a join probing the recomputed
    # rows: SQLite cannot index those on the key (its computed columns have no type
    # affinity), and a join took minutes at a million records.
    unknown = select(*(s[n] for n in key)).except_(select(*(e[n] for n in key))).subquery()
    extra = select(*(null().label(f"e_{n}") for n in columns), *stored).join_from(
        table, unknown, and_(*(s[n] == unknown.c[n] for n in key))
    )
    rows = union_all(missing_or_different, extra).subquery()
    order = [func.coalesce(rows.c[f"e_{n}"], rows.c[f"s_{n}"]) for n in key]
    query = select(rows).order_by(*order).limit(limit)
    found = await conn.execute(query)
    return [_difference(str(table.name), row._mapping, key, measures) for row in found]


def _difference(
    table: str, row: Any, key: tuple[str, ...], measures: tuple[str, ...]
) -> Difference:
    ledger = {n: _value(n, row[f"e_{n}"]) for n in measures}
    stored = {n: _value(n, row[f"s_{n}"]) for n in measures}
    if row["e_bucket"] is None:
        check, side, expected, found = "extra", "s", "no row", _described(stored, None, measures)
    elif row["s_bucket"] is None:
        check, side, expected, found = "missing", "e", _described(ledger, None, measures), "no row"
    else:
        names = [n for n in measures if ledger[n] != stored[n]]
        check, side = "different", "e"
        expected = _described(ledger, names, measures)
        found = _described(stored, names, measures)
    where: dict[str, Any] = dict.fromkeys(DIMENSIONS, "")  # a projection's: others blank
    where.update({n: row[f"{side}_{n}"] for n in key})
    return Difference(table=table, check=check, **where, expected=expected, found=found)


def _value(name: str, value: Any) -> Any:
    # Postgres returns SUM over BIGINT as NUMERIC: compare and print whole numbers.
    if value is None:
        return None
    return Decimal(value) if name == "cost" else int(value)


def _described(values: dict[str, Any], names: list[str] | None, measures: tuple[str, ...]) -> str:
    """``names`` (default: the non-zero measures) as ``name value``, cost in USD."""
    shown = names if names is not None else [n for n in measures if values[n]]
    return ", ".join(
        f"cost {format_usd(values[n])} USD" if n == "cost" else f"{n} {values[n]}" for n in shown
    )


async def unbounded(conn: AsyncConnection) -> None:
    """No ``statement_timeout`` for the rest of this transaction (Postgres): these read
    the whole ledger, longer than the bound a server's statements get (10 s by default)
    at millions of records."""
    if conn.dialect.name == "postgresql":
        await conn.execute(text("SET LOCAL statement_timeout = 0"))


async def rebuild(conn: AsyncConnection, since: datetime | None = None) -> dict[Grain, int]:
    """Recompute both roll-ups from the records, from the UTC day of ``since`` on (all
    without), in ``conn``'s transaction; the rows written per grain."""
    if conn.dialect.name == "postgresql":
        # Batches that would roll up meanwhile wait for the commit (SQLite's one write
        # lock does as much): summed into a row deleted here, or into the recomputed
        # rows too, they would be lost or counted twice.
        every = [t.name for g in TABLES for t in (TABLES[g], *PROJECTION_TABLES[g].values())]
        await conn.execute(text(f"LOCK TABLE {', '.join(every)} IN SHARE ROW EXCLUSIVE MODE"))
        await unbounded(conn)
    start = None if since is None else floor(since, "day")
    written: dict[Grain, int] = {}
    for grain, table in TABLES.items():
        delete = table.delete()
        if start is not None:
            delete = delete.where(table.c.bucket >= start)
        await conn.execute(delete)
        query = recomputed(conn.dialect.name, grain, start)
        result = await conn.execute(table.insert().from_select([*_KEY, *MEASURES], query))
        written[grain] = result.rowcount
        for name, projection in PROJECTION_TABLES[grain].items():
            delete = projection.delete()
            if start is not None:
                delete = delete.where(projection.c.bucket >= start)
            await conn.execute(delete)
            columns = ["bucket", *PROJECTIONS[name], *PROJECTED]
            query = projected_from(table, PROJECTIONS[name], start)
            await conn.execute(projection.insert().from_select(columns, query))
    return written
