"""What the dashboard reads from the roll-ups (``totals``, ``series``, ``top_groups``) against
answers computed here from the records themselves, on SQLite and on Postgres; the
percentile, the grain and the filter's rules on their own."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from sqlalchemy import select
from tests.ledger.sums import bucket, latency_index
from tests.ledger.test_rollups import record, varied
from tests.support import engine_for

from tollhouse.ledger import UsageRecord
from tollhouse.ledger.models import LATENCY_BOUNDS_MS, usage_records
from tollhouse.ledger.rollups import (
    COLUMN,
    OVERFLOW,
    Point,
    RollupFilter,
    Totals,
    choose_grain,
    percentile,
    series,
    snap,
    top_groups,
    totals,
)

DAY0 = datetime(2026, 11, 21, tzinfo=UTC)


def reference_percentile(histogram: list[int], q: float) -> float | None:
    """The interpolated quantile, in exact rationals: the bucket where the running count
    first reaches q × total (the first non-empty one for q = 0)."""
    total = sum(histogram)
    if not total:
        return None
    rank = Fraction(q) * total
    seen = 0
    for i, count in enumerate(histogram):
        if count == 0 or seen + count < rank:
            seen += count
            continue
        low = LATENCY_BOUNDS_MS[i - 1] if i else 0
        if i == len(LATENCY_BOUNDS_MS):
            return float(low)
        return float(low + (LATENCY_BOUNDS_MS[i] - low) * (rank - seen) / count)
    raise AssertionError("not reached")


def matching(records: list[UsageRecord], where: RollupFilter) -> list[UsageRecord]:
    def keep(r: UsageRecord) -> bool:
        return (
            where.since <= r.created_at < where.until
            and (where.customer_id is None or (r.customer_id or "") == where.customer_id)
            and (where.team_id is None or (r.team_id or "") == where.team_id)
            and (not where.key_ids or (r.key_id or "") in where.key_ids)
            and (where.model is None or r.model == where.model)
            and (where.provider is None or r.provider == where.provider)
        )

    return [r for r in records if keep(r)]


def expected_totals(records: list[UsageRecord], where: RollupFilter) -> Totals:
    chosen = matching(records, where)
    histogram = [0] * (OVERFLOW + 1)
    for r in chosen:
        if r.status != "refused":
            histogram[latency_index(r.latency_ms)] += 1
    return Totals(
        requests=len(chosen),
        errors=sum(r.status != "success" for r in chosen),
        prompt_tokens=sum(r.prompt_tokens for r in chosen),
        completion_tokens=sum(r.completion_tokens for r in chosen),
        cost=sum((r.cost for r in chosen), Decimal(0)),
        latency_p50_ms=reference_percentile(histogram, 0.5),
        latency_p95_ms=reference_percentile(histogram, 0.95),
        refused=sum(r.status == "refused" for r in chosen),
    )


def assert_totals(found: Totals, expected: Totals) -> None:
    """Counts and cost exactly; the percentiles to float rounding (the reference is
    computed in rationals)."""
    assert found.requests == expected.requests
    assert (found.errors, found.refused) == (expected.errors, expected.refused)
    assert (found.prompt_tokens, found.completion_tokens) == (
        expected.prompt_tokens,
        expected.completion_tokens,
    )
    assert found.cost == expected.cost
    for name in ("latency_p50_ms", "latency_p95_ms"):
        value, reference = getattr(found, name), getattr(expected, name)
        assert value == (None if reference is None else pytest.approx(reference, rel=1e-12))


def group_of(r: UsageRecord, group: str | None) -> str:
    return "" if group is None else getattr(r, COLUMN[group]) or ""  # type: ignore[index]


def expected_series(records: list[UsageRecord], where: RollupFilter, group: Any) -> list[Point]:
    sums: dict[tuple[datetime, str], list[Any]] = defaultdict(lambda: [0, 0, 0, Decimal(0)])
    for r in matching(records, where):
        point = sums[(bucket(r.created_at, where.grain), group_of(r, group))]
        point[0] += 1
        point[1] += r.status != "success"
        point[2] += r.prompt_tokens + r.completion_tokens
        point[3] += r.cost
    return [Point(b, g, *sums[(b, g)]) for b, g in sorted(sums)]


def expected_top(records: list[UsageRecord], where: RollupFilter, group: Any, limit: int):
    sums: dict[str, list[Any]] = defaultdict(lambda: [Decimal(0), 0])
    for r in matching(records, where):
        sums[group_of(r, group)][0] += r.cost
        sums[group_of(r, group)][1] += 1
    ranked = sorted(sums.items(), key=lambda item: (-item[1][0], item[0]))
    return [(name, cost, n) for name, (cost, n) in ranked[:limit]]


FILTERS: list[dict[str, Any]] = [
    {},
    {"customer_id": "cus_a"},
    {"customer_id": ""},  # records of no customer
    {"team_id": "team_1", "model": "gpt-4o-mini"},
    {"key_ids": ("vk_1", "vk_3")},
    {"key_ids": ("",)},  # key-less records
    {"provider": "anthropic"},
    {"customer_id": "cus_nobody"},
]
RANGES = [
    (DAY0, DAY0 + timedelta(days=2), "day"),
    (DAY0 + timedelta(hours=23), DAY0 + timedelta(days=1, hours=2), "hour"),
    (DAY0 + timedelta(hours=22), DAY0 + timedelta(hours=23), "hour"),
    (DAY0 + timedelta(days=5), DAY0 + timedelta(days=6), "day"),  # nothing there
]


async def test_totals_series_and_top_groups_match_the_records(engine):
    records = varied(60)
    await record(engine, records, batch_size=13)
    async with engine.connect() as conn:
        for since, until, grain in RANGES:
            for filters in FILTERS:
                where = RollupFilter(since, until, grain, **filters)  # type: ignore[arg-type]
                assert_totals(await totals(conn, where), expected_totals(records, where))
                for group in (None, *COLUMN):
                    found = await series(conn, where, group)  # type: ignore[arg-type]
                    assert found == expected_series(records, where, group), (where, group)
                for group in COLUMN:
                    for limit in (0, 1, 3, 100):
                        found = await top_groups(conn, where, group, limit)  # type: ignore[arg-type]
                        expected = expected_top(records, where, group, limit)
                        assert found == expected, (where, group, limit)


async def test_an_empty_range_has_zero_totals_and_no_points(engine):
    where = RollupFilter(DAY0, DAY0 + timedelta(days=1), "day")
    async with engine.connect() as conn:
        assert await totals(conn, where) == Totals(0, 0, 0, 0, Decimal(0), None, None)
        assert await series(conn, where, "model") == []
        assert await top_groups(conn, where, "key", 5) == []
        with pytest.raises(ValueError, match="limit"):
            await top_groups(conn, where, "key", -1)


@pytest.fixture
def icu_url(postgres_server) -> Iterator[str]:
    """A database on the session's Postgres that sorts text as American English does
    (the session's server sorts by code point: ``--locale=C``)."""
    name = f"icu_{uuid.uuid4().hex[:12]}"
    postgres_server.sql(
        f'CREATE DATABASE "{name}" TEMPLATE template0 LOCALE_PROVIDER icu '
        "ICU_LOCALE 'en-US' LOCALE 'C.utf8'"
    )
    try:
        yield postgres_server.url(name)
    finally:
        postgres_server.sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def groups_in_order(engine: Any) -> tuple[list[str], list[str]]:
    names = ["b", "B", "a", "_", "Zed", "é"]
    template = varied(1)[0].row()
    await record(
        engine,
        [
            UsageRecord(**{**template, "id": f"t{i}", "key_id": n, "cost": Decimal(1)})
            for i, n in enumerate(names)
        ],
    )
    where = RollupFilter(DAY0, DAY0 + timedelta(days=1), "day")
    async with engine.connect() as conn:
        top = await top_groups(conn, where, "key", 10)
        points = await series(conn, where, "key")
    assert sorted(names) == ["B", "Zed", "_", "a", "b", "é"]
    return [name for name, _, _ in top], [p.group for p in points]


async def test_groups_are_in_code_point_order(engine):
    # Cost ties in top_groups, and every series, by group in code points.
    top, points = await groups_in_order(engine)
    assert top == points == ["B", "Zed", "_", "a", "b", "é"]


async def test_groups_are_in_code_point_order_whatever_the_databases_collation(icu_url):
    # Postgres sorts text by the database's collation: "_", "a", "b", "B", "é", "Zed" in
    # American English. The reads ask for code points.
    async with engine_for(icu_url) as engine:
        top, points = await groups_in_order(engine)
        async with engine.connect() as conn:
            names = select(usage_records.c.key_id).order_by(usage_records.c.key_id)
            assert (await conn.execute(names)).scalars().all() == ["_", "a", "b", "B", "é", "Zed"]
    assert top == points == ["B", "Zed", "_", "a", "b", "é"]


def test_percentile_interpolates_inside_the_bucket():
    histogram = [0] * (OVERFLOW + 1)
    assert percentile(histogram, 0.5) is None
    histogram[6] = 10  # (10, 15] ms
    assert percentile(histogram, 0.5) == 12.5
    assert percentile(histogram, 0) == 10.0
    assert percentile(histogram, 1) == 15.0
    histogram[0] = 10  # (0, 1] ms: the lower half now
    assert percentile(histogram, 0.25) == 0.5
    assert percentile(histogram, 0.5) == 1.0
    assert percentile(histogram, 0.95) == 14.5
    histogram[OVERFLOW] = 80  # past the last bound: no upper edge to interpolate to
    assert percentile(histogram, 0.95) == 120000.0
    assert percentile(histogram, 1) == 120000.0
    # A product that rounds past the total stays in the last non-empty bucket.
    huge = [0] * (OVERFLOW + 1)
    huge[3] = 2**53 + 3  # as a float, 2**53 + 4
    assert percentile(huge, 1) == 5.0


@pytest.mark.parametrize(
    ("histogram", "q", "message"),
    [
        ([1] * OVERFLOW, 0.5, "buckets"),
        ([1] * (OVERFLOW + 1), 1.5, "q"),
        ([1] * (OVERFLOW + 1), -0.1, "q"),
    ],
)
def test_percentile_refuses_what_it_cannot_answer(histogram, q, message):
    with pytest.raises(ValueError, match=message):
        percentile(histogram, q)


def test_percentile_agrees_with_the_reference_on_many_shapes():
    import random

    rng = random.Random(3)
    for _ in range(300):
        histogram = [rng.choice((0, 0, 0, 1, 2, 7, 1000)) for _ in range(OVERFLOW + 1)]
        for q in (0, 0.01, 0.5, 0.9, 0.95, 0.99, 1):
            assert percentile(histogram, q) == pytest.approx(reference_percentile(histogram, q))


def test_the_grain_is_hours_up_to_two_days():
    assert choose_grain(DAY0, DAY0 + timedelta(hours=48)) == "hour"
    assert choose_grain(DAY0, DAY0 + timedelta(hours=48, seconds=1)) == "day"
    assert choose_grain(DAY0, DAY0) == "hour"


def test_snap_floors_since_and_ceils_until():
    since = datetime(2026, 11, 21, 10, 17, 3, 5, tzinfo=UTC)
    until = datetime(2026, 11, 22, 3, 0, 0, 1, tzinfo=UTC)
    assert snap(since, until, "hour") == (DAY0 + timedelta(hours=10), DAY0 + timedelta(hours=28))
    assert snap(since, until, "day") == (DAY0, DAY0 + timedelta(days=2))
    aligned = (DAY0, DAY0 + timedelta(days=1))
    assert snap(*aligned, "day") == aligned
    assert snap(*aligned, "hour") == aligned
    # Other offsets are taken to UTC first: 01:30 in Kolkata is 20:00 UTC the day before.
    kolkata = timezone(timedelta(hours=5, minutes=30))
    local = datetime(2026, 11, 22, 1, 30, tzinfo=kolkata)
    assert snap(local, local, "hour") == (DAY0 + timedelta(hours=20),) * 2
    assert snap(local, local, "day")[0] == DAY0


def test_a_filter_must_be_aware_aligned_and_in_order():
    RollupFilter(DAY0, DAY0, "day")  # empty, but valid
    RollupFilter(DAY0 + timedelta(hours=3), DAY0 + timedelta(hours=5), "hour")
    naive = datetime(2026, 11, 21)
    with pytest.raises(ValueError, match="aware"):
        RollupFilter(naive, DAY0, "day")
    with pytest.raises(ValueError, match="aware"):
        RollupFilter(DAY0, naive, "day")
    with pytest.raises(ValueError, match="aligned to the day"):
        RollupFilter(DAY0 + timedelta(hours=3), DAY0 + timedelta(days=1), "day")
    with pytest.raises(ValueError, match="aligned to the hour"):
        RollupFilter(DAY0, DAY0 + timedelta(minutes=30), "hour")
    with pytest.raises(ValueError, match="after"):
        RollupFilter(DAY0 + timedelta(days=1), DAY0, "day")
