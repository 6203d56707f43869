"""When a budget's settled spend crosses an alert threshold, and when it will run out.

A threshold ``t`` (0.8 for 80 %) is crossed by the settle that takes committed spend
from below ``t × max_limit`` to at or above it; computed in exact nano-dollars, so that
over any sequence of settles in one window each threshold is crossed exactly once.
A budget that refuses a request counts as having reached 100 % even when settled spend
stopped short (its worst case no longer fits): ``exhausted`` says so.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from decimal import Decimal

from tollhouse.money import NANOS_PER_USD

FULL = Decimal(1)


def mark(threshold: Decimal, max_limit: Decimal) -> Decimal:
    """The spend, in nano-dollars, at which ``threshold`` is reached."""
    return threshold * max_limit * NANOS_PER_USD


Marks = tuple[tuple[Decimal, int], ...]


def marks(thresholds: tuple[Decimal, ...], max_limit: Decimal) -> Marks:
    """``(threshold, whole nano-dollars at which it is reached)``, in order. Spend is a
    whole number of nano-dollars, so reaching ``mark`` means reaching its ceiling:
    computed once per budget, the request path then compares integers."""
    return tuple((t, math.ceil(mark(t, max_limit))) for t in sorted(set(thresholds)))


def crossed_marks(budget_marks: Marks, before: int, after: int) -> list[Decimal]:
    """The thresholds a settle from ``before`` to ``after`` nano-dollars crossed."""
    return [t for t, at in budget_marks if before < at <= after]


def crossed(
    thresholds: tuple[Decimal, ...], max_limit: Decimal, before: int, after: int
) -> list[Decimal]:
    """The thresholds a settle from ``before`` to ``after`` nano-dollars crossed."""
    return crossed_marks(marks(thresholds, max_limit), before, after)


def exhausted(thresholds: tuple[Decimal, ...]) -> list[Decimal]:
    """The thresholds a refusal reports: 100 %, and any below it, as reached."""
    return [t for t in sorted(set(thresholds)) if t <= FULL] or [FULL]


def projected_exhaustion(
    spend: Decimal, max_limit: Decimal, start: datetime, end: datetime, now: datetime
) -> datetime | None:
    """When the budget runs out at the window's spend rate so far, if before it resets."""
    elapsed = (now - start).total_seconds()
    if spend <= 0 or elapsed <= 0:
        return None
    if spend >= max_limit:
        return now
    rate = spend / Decimal(repr(elapsed))  # USD per second, exact from here on
    seconds = (max_limit - spend) / rate
    when = now + timedelta(seconds=float(seconds))
    return when if when < end else None
