"""Committed values from the ledger: where every counter starts, after any restart.

A counter's committed value is what the ledger holds for its scope in its window: the
same records the counters settled with, so counters and ledger agree to the last unit
(docs/governance.md, *After a restart*). Both meters read it through ``LedgerTotals``;
the queries themselves are the ledger's (``tollhouse.ledger.totals``).

Records still buffered in this process's recorder are written first: a total must not
miss a record whose settle the counter being replaced already counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from sqlalchemy.ext.asyncio import AsyncEngine

from tollhouse.admission.meter import Counter, Kind, from_micros
from tollhouse.ledger import totals
from tollhouse.windows import Window

# Records this recent may still be on their way to the ledger when a counter is rebuilt
# in Redis: their ids are listed so that their settles are counted exactly once.
REBUILD_MARGIN_US = 5_000_000

_MEASURE: dict[Kind, totals.Measure] = {
    "budget": "cost",
    "tokens": "tokens",
    "requests": "requests",
    "credits": "cost",
}
# A prepaid account's usage has no window: everything it ever paid for.
_EVER = from_micros(0)


class Flushable(Protocol):
    async def flush(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Rebuilt:
    """A counter's window at the moment it was rebuilt, and what the ledger holds for it."""

    window: Window | None  # None: no window (requests in flight start at 0)
    committed: int
    recent: tuple[str, ...] = ()  # ids of records created at or after the cut


def _summed(counter: Counter) -> bool:
    return counter.kind == "credits" or (counter.window is not None and counter.kind != "parallel")


def _payer(counter: Counter) -> tuple[totals.Payer, str]:
    if counter.payer is not None:
        return "agent", counter.payer[1]
    scope = counter.scope
    if counter.kind == "credits":
        assert scope.credit is not None  # a credits counter is built from its account
        return "account", scope.credit.account_id
    return scope.kind, scope.id


@dataclass(frozen=True, slots=True)
class LedgerTotals:
    engine: AsyncEngine
    recorder: Flushable  # the process's usage recorder

    async def rebuild(self, counters: Sequence[Counter], now: datetime) -> list[Rebuilt]:
        """Each counter's window containing ``now`` and the ledger's total in it."""
        windows = [c.window.at(now) if c.window is not None else None for c in counters]
        if not any(_summed(c) for c in counters):
            return [Rebuilt(w, 0) for w in windows]  # nothing to sum: no round trip
        await self.recorder.flush()
        out = []
        async with self.engine.connect() as conn:
            for counter, window in zip(counters, windows, strict=True):
                committed = 0
                if _summed(counter):
                    since = window.start if window is not None else _EVER
                    payer, payer_id = _payer(counter)
                    measure = _MEASURE[counter.kind]
                    committed = await totals.total(conn, measure, payer, payer_id, since)
                out.append(Rebuilt(window, committed))
        return out

    async def rebuild_with_recent(
        self, counters: Sequence[Counter], now_us: int
    ) -> tuple[int, list[Rebuilt]]:
        """``rebuild``, with the ids of the records of the last ``REBUILD_MARGIN_US``
        listed (Redis: their settles may still be on the way); returns the cut too."""
        await self.recorder.flush()
        now = from_micros(now_us)
        cut_us = now_us - REBUILD_MARGIN_US
        out = []
        async with self.engine.connect() as conn:
            for counter in counters:
                if not _summed(counter):
                    out.append(Rebuilt(None, 0))
                    continue
                window = counter.window.at(now) if counter.window is not None else None
                payer, payer_id = _payer(counter)
                committed, recent = await totals.total_with_recent(
                    conn,
                    _MEASURE[counter.kind],
                    payer,
                    payer_id,
                    window.start if window is not None else _EVER,
                    from_micros(cut_us),
                )
                out.append(Rebuilt(window, committed, tuple(recent)))
        return cut_us, out
