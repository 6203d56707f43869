"""Threshold crossings: exactly once per threshold over any settles of one window."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from tollhouse.thresholds import crossed, exhausted, mark, projected_exhaustion

THRESHOLDS = (Decimal("0.5"), Decimal("0.8"), Decimal("0.95"), Decimal(1))
T0 = datetime(2026, 11, 1, tzinfo=UTC)


@given(
    st.decimals(min_value=Decimal("0.000001"), max_value=Decimal(10**6), places=6),
    st.lists(st.integers(0, 10**15), max_size=60),
)
def test_each_threshold_is_crossed_once_by_any_sequence_of_settles(max_limit, costs):
    spend, seen = 0, []
    for cost in costs:
        seen += crossed(THRESHOLDS, max_limit, spend, spend + cost)
        spend += cost
    assert seen == sorted(seen)
    assert len(seen) == len(set(seen))  # never twice
    assert seen == [t for t in THRESHOLDS if mark(t, max_limit) <= spend]  # none missed


def test_the_settle_that_lands_exactly_on_the_mark_crosses_it():
    limit = Decimal(10)  # 80 % is 8 USD = 8e9 nanos
    assert crossed(THRESHOLDS, limit, 7_999_999_999, 8_000_000_000) == [Decimal("0.8")]
    assert crossed(THRESHOLDS, limit, 8_000_000_000, 8_000_000_001) == []
    assert crossed(THRESHOLDS, limit, 0, 0) == []


def test_a_refusal_reports_every_threshold_up_to_100_percent():
    assert exhausted(THRESHOLDS) == list(THRESHOLDS)
    assert exhausted((Decimal("1.2"),)) == [Decimal(1)]


def test_projection_follows_the_window_spend_rate():
    now = T0 + timedelta(days=10)
    # 25 USD in 10 days of a 30-day window with 100 USD: 75 more take 30 days: too late.
    assert projected_exhaustion(Decimal(25), Decimal(100), T0, T0 + timedelta(days=30), now) is None
    # 50 USD in 10 days: the other 50 take 10 more days.
    when = projected_exhaustion(Decimal(50), Decimal(100), T0, T0 + timedelta(days=30), now)
    assert when is not None and abs((when - (now + timedelta(days=10))).total_seconds()) < 1
    assert projected_exhaustion(Decimal(0), Decimal(100), T0, T0 + timedelta(days=30), now) is None
    assert projected_exhaustion(Decimal(100), Decimal(100), T0, T0 + timedelta(days=30), now) == now
