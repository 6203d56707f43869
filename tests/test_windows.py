"""Window arithmetic (``tollhouse/windows.py``): rolling and calendar-aligned, in zones.

Properties hold for every unit (``s m h d w M Y``) and count: the window contains the
moment asked about, windows tile time exactly (asking at one window's end gives the next,
which starts there), rolling windows are the anchor plus whole steps (months and years
counted from the anchor, never chained), calendar windows start at local midnight on a
Monday / the 1st / Jan 1 in the configured zone, and a reset inside a calendar window
starts the rest of it afresh.
"""

from __future__ import annotations

import calendar
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tollhouse.windows import Duration, Window, parse_duration, window_at

ZONES = ["UTC", "Europe/Paris", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]
PARIS = ZoneInfo("Europe/Paris")
MICRO = timedelta(microseconds=1)

# Counts per unit, kept small enough that windows stay well inside datetime's range.
_COUNTS = {"s": 100_000, "m": 10_000, "h": 2_000, "d": 400, "w": 60, "M": 36, "Y": 5}
_FIXED = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

moments = st.datetimes(
    min_value=datetime(1990, 1, 1), max_value=datetime(2080, 12, 31), timezones=st.just(UTC)
)
zones = st.sampled_from(ZONES).map(ZoneInfo)


@st.composite
def durations(draw: st.DrawFn, units: str = "smhdwMY") -> Duration:
    unit = draw(st.sampled_from(units))
    count = draw(st.one_of(st.integers(1, 12), st.integers(1, _COUNTS[unit])))
    return parse_duration(f"{count}{unit}")


def shift_months(anchor: datetime, months: int) -> datetime:
    """The oracle for ``M``/``Y`` steps: same day (clamped to the month's end) and time."""
    year, month = divmod(anchor.year * 12 + anchor.month - 1 + months, 12)
    day = min(anchor.day, calendar.monthrange(year, month + 1)[1])
    return anchor.replace(year=year, month=month + 1, day=day)


def months_between(earlier: datetime, later: datetime) -> int:
    return (later.year - earlier.year) * 12 + later.month - earlier.month


def local(moment: datetime, tz: ZoneInfo) -> datetime:
    return moment.astimezone(tz)


def assert_tiles(window: Window, at: datetime, ask: object) -> None:
    """``window`` contains ``at``; asking at its last instant gives it back, asking at its
    end gives the next window, which starts exactly there."""
    assert window.start < window.end
    assert window.contains(at)
    assert ask(window.end - MICRO) == window  # type: ignore[operator]
    following = ask(window.end)  # type: ignore[operator]
    assert following.start == window.end
    assert following.start < following.end


# --- rolling -----------------------------------------------------------------------------


@given(anchor=moments, duration=durations(), offset=st.integers(0, 40 * 366 * 86400))
def test_rolling_window_contains_now_and_tiles(anchor, duration, offset):
    now = anchor + timedelta(seconds=offset, microseconds=offset % 997)

    def ask(moment: datetime) -> Window:
        return window_at(moment, duration, anchor)

    assert_tiles(ask(now), now, ask)


@given(anchor=moments, duration=durations("smhdw"), offset=st.integers(0, 40 * 366 * 86400))
def test_rolling_fixed_windows_are_the_anchor_plus_whole_steps(anchor, duration, offset):
    now = anchor + timedelta(seconds=offset)
    window = window_at(now, duration, anchor)
    step = timedelta(seconds=_FIXED[duration.unit] * duration.count)
    assert duration.seconds == step.total_seconds()
    assert window.end - window.start == step
    assert (window.start - anchor) % step == timedelta(0)
    assert window.start >= anchor


@given(anchor=moments, duration=durations("MY"), offset=st.integers(0, 40 * 366 * 86400))
def test_rolling_months_and_years_are_counted_from_the_anchor(anchor, duration, offset):
    now = anchor + timedelta(seconds=offset)
    window = window_at(now, duration, anchor)
    step = duration.months
    assert step == duration.count * (12 if duration.unit == "Y" else 1)
    elapsed = months_between(anchor, window.start)
    assert elapsed >= 0 and elapsed % step == 0
    # Counted from the anchor, never chained: a short month does not shift later windows.
    assert window.start == shift_months(anchor, elapsed)
    assert window.end == shift_months(anchor, elapsed + step)
    assert window.start.time() == anchor.time()
    last_day = calendar.monthrange(window.start.year, window.start.month)[1]
    assert window.start.day == min(anchor.day, last_day)


@given(anchor=moments, duration=durations(), before=st.integers(1, 10 * 366 * 86400))
def test_rolling_before_the_anchor_is_the_first_window(anchor, duration, before):
    window = window_at(anchor - timedelta(seconds=before), duration, anchor)
    assert window == window_at(anchor, duration, anchor)
    assert window.start == anchor


def test_month_end_anchor_steps_through_short_months():
    anchor = datetime(2024, 1, 31, 9, 30, tzinfo=UTC)
    one_month = parse_duration("1M")
    starts = []
    moment = anchor
    for _ in range(6):
        window = window_at(moment, one_month, anchor)
        starts.append(window.start)
        moment = window.end
    assert [s.date().isoformat() for s in starts] == [
        "2024-01-31",
        "2024-02-29",  # leap year
        "2024-03-31",  # back to the 31st: counted from the anchor, not from Feb 29
        "2024-04-30",
        "2024-05-31",
        "2024-06-30",
    ]
    assert all(s.time() == anchor.time() for s in starts)
    assert window_at(datetime(2023, 2, 15, tzinfo=UTC), one_month, anchor.replace(year=2023)) == (
        Window(datetime(2023, 1, 31, 9, 30, tzinfo=UTC), datetime(2023, 2, 28, 9, 30, tzinfo=UTC))
    )


def test_leap_day_anchor_for_yearly_windows():
    anchor = datetime(2024, 2, 29, tzinfo=UTC)
    one_year = parse_duration("1Y")
    window = window_at(datetime(2025, 6, 1, tzinfo=UTC), one_year, anchor)
    assert window == Window(datetime(2025, 2, 28, tzinfo=UTC), datetime(2026, 2, 28, tzinfo=UTC))
    window = window_at(datetime(2028, 3, 1, tzinfo=UTC), one_year, anchor)
    assert window.start == datetime(2028, 2, 29, tzinfo=UTC)
    # The instant before Feb 29 2028 is still in the 2027 window.
    before = window_at(datetime(2028, 2, 28, 23, 59, tzinfo=UTC), one_year, anchor)
    assert before == Window(datetime(2027, 2, 28, tzinfo=UTC), datetime(2028, 2, 29, tzinfo=UTC))


def test_rolling_seconds_from_an_anchor_with_microseconds():
    anchor = datetime(2025, 5, 1, 12, 0, 0, 250_000, tzinfo=UTC)
    window = window_at(anchor + timedelta(seconds=7.9), parse_duration("5s"), anchor)
    assert window == Window(anchor + timedelta(seconds=5), anchor + timedelta(seconds=10))


# --- calendar-aligned ---------------------------------------------------------------------

FAR_PAST = datetime(1800, 1, 1, tzinfo=UTC)  # an anchor before every window: no trimming


def calendar_window(now: datetime, duration: Duration, tz: ZoneInfo, anchor=FAR_PAST) -> Window:
    return window_at(now, duration, anchor, calendar_aligned=True, tz=tz)


@given(now=moments, duration=durations(), tz=zones)
def test_calendar_window_contains_now_and_tiles(now, duration, tz):
    def ask(moment: datetime) -> Window:
        return calendar_window(moment, duration, tz)

    assert_tiles(ask(now), now, ask)


@given(now=moments, duration=durations("smh"), tz=zones)
def test_calendar_sub_day_windows_align_to_the_clock(now, duration, tz):
    window = calendar_window(now, duration, tz)
    step = _FIXED[duration.unit] * duration.count
    assert window.start.timestamp() % step == 0
    assert (window.end - window.start).total_seconds() == step


@given(now=moments, duration=durations("dwMY"), tz=zones)
def test_calendar_windows_start_at_local_midnight(now, duration, tz):
    window = calendar_window(now, duration, tz)
    for edge in (window.start, window.end):
        wall = local(edge, tz)
        assert (wall.hour, wall.minute, wall.second, wall.microsecond) == (0, 0, 0, 0)
    start, end = local(window.start, tz), local(window.end, tz)
    if duration.unit == "d":
        assert (end.date() - start.date()).days == duration.count
    elif duration.unit == "w":
        assert start.weekday() == 0 and end.weekday() == 0  # Monday
        assert (end.date() - start.date()).days == 7 * duration.count
    else:
        assert start.day == 1 and end.day == 1
        assert months_between(start, end) == duration.months
        if duration.unit == "Y":
            assert start.month == 1


@given(now=moments, tz=zones)
def test_calendar_quarters_start_in_january_april_july_october(now, tz):
    window = calendar_window(now, parse_duration("3M"), tz)
    assert local(window.start, tz).month in (1, 4, 7, 10)
    assert window.contains(now)


@given(now=moments, tz=zones)
def test_calendar_month_is_the_local_month_of_now(now, tz):
    window = calendar_window(now, parse_duration("1M"), tz)
    wall = local(now, tz)
    start = local(window.start, tz)
    assert (start.year, start.month, start.day) == (wall.year, wall.month, 1)


@pytest.mark.parametrize(
    ("day", "hours"),
    [
        ("2024-03-31", 23),  # spring forward
        ("2024-10-27", 25),  # fall back
        ("2024-07-14", 24),
        ("2025-03-30", 23),
        ("2025-10-26", 25),
    ],
)
def test_calendar_day_in_paris_lasts_23_or_25_hours_on_dst_days(day, hours):
    noon = datetime.fromisoformat(f"{day}T12:00:00").replace(tzinfo=PARIS)
    window = calendar_window(noon.astimezone(UTC), parse_duration("1d"), PARIS)
    assert window.end - window.start == timedelta(hours=hours)
    assert local(window.start, PARIS).date().isoformat() == day


def test_calendar_day_in_lord_howe_lasts_23_and_a_half_hours_on_its_dst_day():
    tz = ZoneInfo("Australia/Lord_Howe")  # a 30-minute DST shift
    noon = datetime(2024, 10, 6, 12, tzinfo=tz)
    window = calendar_window(noon.astimezone(UTC), parse_duration("1d"), tz)
    assert window.end - window.start == timedelta(hours=23, minutes=30)


def test_calendar_month_in_paris_starts_at_local_midnight_not_utc():
    now = datetime(2024, 2, 29, 23, 30, tzinfo=UTC)  # already March 1st in Paris
    window = calendar_window(now, parse_duration("1M"), PARIS)
    assert window == Window(
        datetime(2024, 2, 29, 23, 0, tzinfo=UTC), datetime(2024, 3, 31, 22, 0, tzinfo=UTC)
    )


def test_calendar_february_of_a_leap_year_has_29_days():
    now = datetime(2024, 2, 10, tzinfo=UTC)
    window = calendar_window(now, parse_duration("1M"), ZoneInfo("UTC"))
    assert window.end - window.start == timedelta(days=29)
    window = calendar_window(now.replace(year=2023), parse_duration("1M"), ZoneInfo("UTC"))
    assert window.end - window.start == timedelta(days=28)


def test_calendar_week_starts_on_monday_in_new_york():
    tz = ZoneInfo("America/New_York")
    sunday_night = datetime(2024, 11, 3, 23, 0, tzinfo=tz)  # DST ended that morning
    window = calendar_window(sunday_night.astimezone(UTC), parse_duration("1w"), tz)
    assert local(window.start, tz) == datetime(2024, 10, 28, tzinfo=tz)
    assert local(window.end, tz) == datetime(2024, 11, 4, tzinfo=tz)
    assert window.end - window.start == timedelta(days=7, hours=1)


def test_calendar_year_in_kolkata():
    tz = ZoneInfo("Asia/Kolkata")
    window = calendar_window(datetime(2024, 12, 31, 19, 0, tzinfo=UTC), parse_duration("1Y"), tz)
    assert window.start == datetime(2024, 12, 31, 18, 30, tzinfo=UTC)  # Jan 1 2025, IST
    assert window.end - window.start == timedelta(days=365)


@given(now=moments, duration=durations(), tz=zones, fraction=st.floats(0.0, 1.0))
def test_a_reset_inside_a_calendar_window_starts_the_rest_afresh(now, duration, tz, fraction):
    full = calendar_window(now, duration, tz)
    # The anchor (last reset) falls somewhere in the window, at or before now.
    span = now - full.start
    anchor = full.start + span * fraction
    trimmed = calendar_window(now, duration, tz, anchor)
    if anchor > full.start:
        assert trimmed == Window(anchor, full.end)
    else:
        assert trimmed == full
    assert trimmed.contains(now)
    # The next window is a whole calendar window again.
    assert calendar_window(full.end, duration, tz, anchor) == calendar_window(
        full.end, duration, tz
    )


@given(now=moments, duration=durations(), tz=zones, ahead=st.integers(1, 86400))
def test_an_anchor_after_now_leaves_the_calendar_window_whole(now, duration, tz, ahead):
    anchor = now + timedelta(seconds=ahead)
    assert calendar_window(now, duration, tz, anchor) == calendar_window(now, duration, tz)


def test_calendar_without_a_zone_is_utc():
    now = datetime(2024, 6, 15, 13, 0, tzinfo=UTC)
    window = window_at(now, parse_duration("1d"), FAR_PAST, calendar_aligned=True)
    assert window == Window(datetime(2024, 6, 15, tzinfo=UTC), datetime(2024, 6, 16, tzinfo=UTC))


# --- every accepted duration works --------------------------------------------------------


@given(
    count=st.one_of(st.integers(1, 2000), st.integers(1, 10**10)),
    unit=st.sampled_from("smhdwMY"),
    now=st.datetimes(
        min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    ),
    aligned=st.booleans(),
    tz=zones,
)
def test_every_accepted_duration_has_a_window(count, unit, now, aligned, tz):
    """A span too long for ``datetime`` is refused up front (a 400 at the admin API), never
    accepted and then a 500 on every request of the key that carries it."""
    try:
        duration = parse_duration(f"{count}{unit}")
    except ValueError:
        months = count * {"M": 1, "Y": 12}.get(unit, 0)
        seconds = count * _FIXED.get(unit, 0)
        assert months > 1200 or seconds > 100 * 365 * 86400  # only spans over 100 years
        return
    window = window_at(now, duration, now, calendar_aligned=aligned, tz=tz)
    assert window.contains(now)


@pytest.mark.parametrize("text", ["9999Y", "999999M", "999999w", "101Y", "1201M"])
def test_spans_beyond_a_hundred_years_are_refused(text):
    with pytest.raises(ValueError, match="at most 100 years"):
        parse_duration(text)


@pytest.mark.parametrize("text", ["100Y", "1200M", "5200w", "36500d"])
def test_spans_up_to_a_hundred_years_are_accepted(text):
    duration = parse_duration(text)
    now = datetime(2090, 6, 1, tzinfo=UTC)
    assert window_at(now, duration, now).contains(now)
    assert window_at(now, duration, now, calendar_aligned=True, tz=PARIS).contains(now)


# --- parse_duration -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    ["1s", "5s", "30s", "1m", "2m", "5m", "1h", "2h", "24h", "1d", "1w", "1M", "3M", "6M", "1Y"],
)
def test_parse_duration_accepts_the_documented_forms(text):
    duration = parse_duration(text)
    assert f"{duration.count}{duration.unit}" == text
    assert duration.text == text
    assert (duration.seconds is None) == (duration.unit in "MY")
    assert (duration.months is None) == (duration.unit not in "MY")


@pytest.mark.parametrize(
    "text", ["", "1", "0h", "-1h", "1D", "1y", "invalid", "1.5h", " 1h", "1h ", "h", "01h"]
)
def test_parse_duration_rejects_other_forms(text):
    with pytest.raises(ValueError, match="Invalid reset duration"):
        parse_duration(text)


def test_parse_duration_rejects_non_strings():
    with pytest.raises(ValueError):
        parse_duration(3600)  # type: ignore[arg-type]


@given(count=st.integers(1, 1200), unit=st.sampled_from("smhdwM"))
def test_parse_duration_round_trips(count, unit):
    duration = parse_duration(f"{count}{unit}")
    assert (duration.count, duration.unit) == (count, unit)


@pytest.mark.parametrize("text", ["1h\n", "\n1h", "1h\r\n"])
def test_parse_duration_rejects_surrounding_newlines(text):
    with pytest.raises(ValueError):
        parse_duration(text)
