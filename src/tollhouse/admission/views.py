"""What the admin API shows of the counters: spend and use in the current windows.

Read from the meter's ``counters`` (scaled out, refreshed from Redis first by the
routes), each rolled to ``now`` so that a window that ended shows nothing spent.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from tollhouse.admission.meter import Counter, CounterId
from tollhouse.money import from_nanos


def budget_usage(
    counters: dict[CounterId, Counter], budget_id: str, now: datetime
) -> tuple[Decimal, datetime | None]:
    """USD committed in the budget's current window, and when that window began."""
    counter = counters.get(("budget", budget_id))
    if counter is None:
        return Decimal(0), None
    counter.roll(now)
    return from_nanos(counter.committed), counter.start


def rate_usage(
    counters: dict[CounterId, Counter], rate_limit_id: str, now: datetime
) -> tuple[int, int, datetime | None, datetime | None]:
    """Tokens and requests committed in the current windows, and when those began."""
    tokens = counters.get(("tokens", rate_limit_id))
    requests = counters.get(("requests", rate_limit_id))
    for counter in (tokens, requests):
        if counter is not None:
            counter.roll(now)
    return (
        tokens.committed if tokens else 0,
        requests.committed if requests else 0,
        tokens.start if tokens else None,
        requests.start if requests else None,
    )


def counter_rows(counters: dict[CounterId, Counter], now: datetime) -> list[dict[str, Any]]:
    """Every counter, for ``/api/governance/debug/counters``; money as exact strings."""
    rows = []
    for (kind, ident), counter in sorted(counters.items()):
        counter.roll(now)
        money = kind in ("budget", "credits")
        rows.append(
            {
                "kind": kind,
                "id": ident,
                "scope": counter.scope.kind,
                "scope_id": counter.scope.id,
                "limit": str(from_nanos(counter.limit)) if money else counter.limit,
                "committed": str(from_nanos(counter.committed)) if money else counter.committed,
                "reserved": str(from_nanos(counter.reserved)) if money else counter.reserved,
                "window_start": counter.start.isoformat() if counter.start else None,
                "window_end": counter.end.isoformat() if counter.end else None,
            }
        )
    return rows
