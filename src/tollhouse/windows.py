"""Reset windows: ``1s 30s 5m 1h 1d 1w 1M 1Y`` forms, rolling or calendar-aligned.

A window is a half-open interval ``[start, end)``. Windows are a pure function of an
anchor (the budget's ``last_reset``), the duration, the mode and the time zone, so every
replica and every restart agrees on where a window begins and ends, and each window
resets exactly once however often it is looked at.

- **Rolling** (default): windows follow the anchor in whole steps. ``s m h d w`` are
  fixed lengths; ``M`` and ``Y`` are calendar months and years counted from the anchor
  (an anchor on Jan 31 gives Feb 28/29, Mar 31, Apr 30, …: always counted from the
  anchor, never chained, so a short month does not shift later windows).
- **Calendar-aligned**: ``d`` windows start at local midnight in the configured zone
  (a DST day is 23 or 25 hours long), ``w`` on Monday 00:00, ``M`` on the 1st (``3M``:
  Jan/Apr/Jul/Oct), ``Y`` on Jan 1. Sub-day units align to the clock (``5m`` → :00, :05 …),
  counted in absolute time. A reset (``usage-reset``) moves the anchor to now, which
  starts the rest of the current calendar window afresh.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_PATTERN = re.compile(r"([1-9][0-9]{0,9})([smhdwMY])")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_EPOCH_MONDAY = date(1970, 1, 5)
_MAX_MONTHS = 1200


@dataclass(frozen=True, slots=True)
class Duration:
    count: int
    unit: str
    text: str

    @property
    def months(self) -> int | None:
        """Length in calendar months for ``M``/``Y``; ``None`` for fixed lengths."""
        if self.unit == "M":
            return self.count
        if self.unit == "Y":
            return self.count * 12
        return None

    @property
    def seconds(self) -> int | None:
        unit = _SECONDS.get(self.unit)
        return None if unit is None else unit * self.count


def parse_duration(text: str) -> Duration:
    """``"5m"`` → ``Duration(5, "m")``; raises ``ValueError`` naming the accepted forms.

    Spans longer than 100 years are refused: their windows would leave the calendar
    that ``datetime`` can represent.
    """
    match = _PATTERN.fullmatch(text) if isinstance(text, str) else None
    if match is not None:
        duration = Duration(int(match.group(1)), match.group(2), text)
        months, seconds = duration.months, duration.seconds
        if (months or 0) <= _MAX_MONTHS and (seconds or 0) <= _MAX_MONTHS * 31 * 86400:
            return duration
    raise ValueError(
        f"Invalid reset duration format: {text} (use a whole number and one of "
        "s, m, h, d, w, M, Y: 30s, 5m, 1h, 1d, 1w, 1M, 1Y; at most 100 years)"
    )


def _up_to(limit: int) -> str:
    """A regular expression of the whole numbers 1 to ``limit`` (no leading zeros)."""
    text = str(limit)
    size = len(text)
    parts = [f"[1-9][0-9]{{0,{size - 2}}}"] if size > 1 else []
    for i, digit in enumerate(map(int, text)):
        low = 1 if i == 0 else 0
        if digit > low:
            rest = size - i - 1
            parts.append(text[:i] + f"[{low}-{digit - 1}]" + (f"[0-9]{{{rest}}}" if rest else ""))
    parts.append(text)
    return "(?:" + "|".join(parts) + ")"


def duration_pattern() -> str:
    """The durations ``parse_duration`` takes, as one regular expression (for JSON Schema)."""
    longest = _MAX_MONTHS * 31 * 86400
    limits = {unit: longest // seconds for unit, seconds in _SECONDS.items()}
    limits.update(M=_MAX_MONTHS, Y=_MAX_MONTHS // 12)
    return "^(?:" + "|".join(f"{_up_to(n)}{unit}" for unit, n in limits.items()) + ")$"


def zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name!r} (use an IANA name such as Europe/Paris)"
        ) from None


@dataclass(frozen=True, slots=True)
class Window:
    start: datetime
    end: datetime

    def contains(self, moment: datetime) -> bool:
        return self.start <= moment < self.end


def window_at(
    now: datetime,
    duration: Duration,
    anchor: datetime,
    *,
    calendar_aligned: bool = False,
    tz: ZoneInfo | None = None,
) -> Window:
    """The window containing ``now`` (the first window when ``now`` precedes the anchor)."""
    if calendar_aligned:
        window = _calendar_window(now, duration, tz or ZoneInfo("UTC"))
        # A reset in the middle of a calendar window starts the rest of it afresh.
        if window.start < anchor <= now:
            return Window(anchor, window.end)
        return window
    if now < anchor:
        now = anchor
    months = duration.months
    if months is None:
        step = timedelta(seconds=duration.seconds or 0)
        start = anchor + ((now - anchor) // step) * step
        return Window(start, start + step)
    elapsed = (now.year - anchor.year) * 12 + (now.month - anchor.month)
    k = elapsed // months
    start = _add_months(anchor, k * months)
    if start > now:
        k -= 1
        start = _add_months(anchor, k * months)
    return Window(start, _add_months(anchor, (k + 1) * months))


def _add_months(moment: datetime, months: int) -> datetime:
    index = moment.year * 12 + (moment.month - 1) + months
    year, month = divmod(index, 12)
    day = min(moment.day, calendar.monthrange(year, month + 1)[1])
    return moment.replace(year=year, month=month + 1, day=day)


def _local_midnight(day: date, tz: ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC)


def _calendar_window(now: datetime, duration: Duration, tz: ZoneInfo) -> Window:
    unit, count = duration.unit, duration.count
    if unit in ("s", "m", "h"):
        step = _SECONDS[unit] * count
        epoch = int(now.timestamp())
        start_s = epoch - epoch % step
        start = datetime.fromtimestamp(start_s, UTC)
        return Window(start, start + timedelta(seconds=step))
    today = now.astimezone(tz).date()
    if unit in ("d", "w"):
        days = count * (7 if unit == "w" else 1)
        origin = _EPOCH_MONDAY if unit == "w" else date(1970, 1, 1)
        offset = (today - origin).days % days
        first = today - timedelta(days=offset)
        return Window(_local_midnight(first, tz), _local_midnight(first + timedelta(days), tz))
    months = duration.months or 1
    index = today.year * 12 + today.month - 1
    index -= index % months
    first = date(index // 12, index % 12 + 1, 1)
    after = index + months
    return Window(
        _local_midnight(first, tz), _local_midnight(date(after // 12, after % 12 + 1, 1), tz)
    )
