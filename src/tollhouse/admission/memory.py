"""The in-process meter: every counter of one server process, in a dict.

The embedded strategy (one process owns the counters), and the local view of a replica
under ``RedisMeter``: the values Redis last reported, and the meter that decides while
Redis is unreachable for keys that fail open.

The check and the reservation run without an ``await`` between them (``reserve``
never suspends), so on one event loop no interleaving of requests can admit more than
the limits allow: ``committed + reserved ≤ limit`` for every counter at every moment,
and committed alone therefore never exceeds the limit either. Reservations expire
(``sweep``), so a request that never settles cannot hold capacity forever; expiry runs
on a monotonic clock, so a wall-clock step does not release capacity early.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from tollhouse.admission.meter import (
    ALWAYS,
    Counter,
    CounterId,
    Kind,
    Refusal,
    Spent,
    from_micros,
    micros,
)
from tollhouse.admission.rebuild import LedgerTotals
from tollhouse.windows import Window


@dataclass(slots=True)
class Reservation:
    id: str
    ids: tuple[CounterId, ...]
    amounts: tuple[int, ...]
    expires_ns: int  # on the meter's clock
    open: bool = True


@dataclass(slots=True)
class MemoryMeter:
    """All counters of one process; every operation completes without awaiting."""

    ledger: LedgerTotals  # where a new counter's committed value comes from
    ttl_s: float
    clock: Callable[[], int] = time.monotonic_ns  # nanoseconds, for expiry only
    counters: dict[CounterId, Counter] = field(default_factory=dict)
    open: dict[str, Reservation] = field(default_factory=dict)
    _ttl_ns: int = field(init=False)

    def __post_init__(self) -> None:
        self._ttl_ns = round(self.ttl_s * 1e9)

    @property
    def pending(self) -> int:
        return 0

    async def start(self) -> None:
        pass

    async def stop(self, timeout_s: float) -> None:
        pass

    async def flush(self) -> None:
        pass

    async def track(self, new: Mapping[CounterId, Counter], now: datetime) -> None:
        items = [(i, c) for i, c in new.items() if i not in self.counters]
        rebuilt = await self.ledger.rebuild([c for _, c in items], now)
        for (counter_id, counter), state in zip(items, rebuilt, strict=True):
            # Another request may have built this counter (and settled on it) while the
            # total was awaited: that one is current, this one is stale.
            if counter_id not in self.counters:
                counter.committed = state.committed
                self.load(counter_id, counter, state.window)

    def load(self, counter_id: CounterId, counter: Counter, window: Window | None) -> None:
        """Install ``counter`` (committed already rebuilt for ``window``), keeping any
        capacity that reservations in flight hold on the counter it replaces."""
        old = self.counters.get(counter_id)
        if old is not None:
            counter.reserved = old.reserved
        if window is not None:
            counter.set_window(window.start, window.end)
        elif counter.window is None:
            counter.start_us, counter.end_us = ALWAYS
        self.counters[counter_id] = counter

    async def reserve(
        self,
        rid: str,
        ids: tuple[CounterId, ...],
        amounts: tuple[int, ...],
        now_us: int,
        fail_open: bool = False,
    ) -> Reservation | Refusal:
        """Every amount or none, checked in the order given; nothing here awaits, so no
        other request runs between the check and the reservation."""
        counters = [self.counters[counter_id] for counter_id in ids]
        for counter, amount in zip(counters, amounts, strict=True):
            if not counter.start_us <= now_us < counter.end_us:
                counter.roll(from_micros(now_us))
            if counter.committed + counter.reserved + amount > counter.limit:
                return Refusal(counter, amount)
        for counter, amount in zip(counters, amounts, strict=True):
            counter.reserved += amount
        reservation = Reservation(rid, ids, amounts, self.clock() + self._ttl_ns)
        self.open[rid] = reservation
        return reservation

    def settle(
        self,
        held: Reservation,
        actual: Mapping[Kind, int],
        created: datetime,
        on_spent: Spent | None = None,
        uncovered: tuple[CounterId, ...] = (),
    ) -> None:
        counters = self.counters
        before = None
        if on_spent is not None:
            before = [
                (counter, counter.committed, counter.start_us)
                for counter_id in (held.ids + uncovered if uncovered else held.ids)
                if counter_id[0] == "budget" and (counter := counters.get(counter_id))
            ]
        still_open = held.open
        created_us = micros(created)
        for counter_id, amount in zip(held.ids, held.amounts, strict=True):
            counter = counters.get(counter_id)
            if counter is None:
                continue
            if not counter.start_us <= created_us < counter.end_us:
                counter.roll(created)
            if still_open:
                counter.reserved -= amount
            counter.committed += actual.get(counter_id[0], 0)
        self._close(held)
        for counter_id in uncovered:
            counter = counters.get(counter_id)
            if counter is not None:
                counter.roll(created)
                counter.committed += actual.get(counter_id[0], 0)
        if before and on_spent is not None:
            for counter, committed, start_us in before:
                spent_before = committed if counter.start_us == start_us else 0
                on_spent(counter, spent_before, counter.committed)

    def release(self, held: Reservation) -> None:
        if held.open:
            for counter_id, amount in zip(held.ids, held.amounts, strict=True):
                counter = self.counters.get(counter_id)
                if counter is not None:
                    counter.reserved -= amount
        self._close(held)

    async def sweep(self, now: datetime) -> int:
        """Release reservations past their expiry and roll idle counters to ``now``;
        returns how many reservations expired."""
        moment = self.clock()
        expired = [r for r in self.open.values() if r.expires_ns <= moment]
        for reservation in expired:
            self.release(reservation)
        for counter in self.counters.values():
            counter.roll(now)
        return len(expired)

    async def refresh(self, ids: list[CounterId], now: datetime) -> None:
        pass  # these counters are the truth

    async def publish_limits(self, ids: list[CounterId]) -> None:
        pass  # one process: its counters already hold the limits it checks

    async def reset(self, ids: list[CounterId], now: datetime) -> None:
        for counter_id in ids:
            counter = self.counters.get(counter_id)
            if counter is not None:
                counter.committed = 0
                if counter.window is not None:
                    window = counter.window.at(now)
                    counter.set_window(window.start, window.end)

    def _close(self, reservation: Reservation) -> None:
        reservation.open = False
        self.open.pop(reservation.id, None)
