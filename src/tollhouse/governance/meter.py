"""Counters and reservations: the in-process meter (embedded mode).

Every limited quantity is a ``Counter``: one budget's spend (nano-dollars), one rate
limit's tokens or requests, one key's requests in flight. A request ``reserve``s its
worst case on every counter it touches, all or nothing; it later ``settle``s to what it
actually consumed or is ``release``d. The check and the reservation run without an
``await`` between them, so on one event loop no interleaving of requests can admit
more than the limits allow: the invariant is

    committed + reserved ≤ limit      for every counter, at every moment

and committed alone therefore never exceeds the limit either. Reservations expire
(``sweep``), so a request that never settles cannot hold capacity forever.

Committed values are rebuilt from the ledger when a counter is first used (``load``),
which is why ledger and counters agree to the last unit after any restart.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal, NamedTuple

from tollhouse.governance.store import Scope, WindowSpec
from tollhouse.governance.windows import Window

Kind = Literal["budget", "tokens", "requests", "parallel"]
CounterKey = tuple[Kind, str]


@dataclass(slots=True)
class Counter:
    kind: Kind
    limit: int
    window: WindowSpec | None  # None: no window (requests in flight)
    scope: Scope
    committed: int = 0
    reserved: int = 0
    start: datetime | None = None
    end: datetime | None = None

    def roll(self, now: datetime) -> None:
        """Move to the window containing ``now``; a new window starts with nothing spent."""
        end = self.end
        if end is not None and now < end and now >= self.start:  # type: ignore[operator]
            return
        if self.window is None:
            return
        current = self.window.at(now)
        if self.start is not None and current.start != self.start:
            self.committed = 0
        self.start, self.end = current.start, current.end

    @property
    def remaining(self) -> int:
        return max(self.limit - self.committed - self.reserved, 0)


class Claim(NamedTuple):
    # A NamedTuple, not a frozen dataclass: several are built per request.
    key: CounterKey
    amount: int


@dataclass(slots=True)
class Reservation:
    id: int
    claims: tuple[Claim, ...]
    expires: float
    open: bool = True


@dataclass(frozen=True, slots=True)
class Refusal:
    """The first counter that could not take its claim."""

    counter: Counter
    amount: int


@dataclass(slots=True)
class MemoryMeter:
    """All counters of one process; every method is synchronous on purpose."""

    ttl_s: float
    clock: Callable[[], float] = time.monotonic
    counters: dict[CounterKey, Counter] = field(default_factory=dict)
    open: dict[int, Reservation] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    def has(self, key: CounterKey) -> bool:
        return key in self.counters

    def load(self, key: CounterKey, counter: Counter, window: Window | None) -> None:
        """Install ``counter`` (committed already rebuilt for ``window``), keeping any
        capacity that reservations in flight hold on the counter it replaces."""
        old = self.counters.get(key)
        if old is not None:
            counter.reserved = old.reserved
        if window is not None:
            counter.start, counter.end = window.start, window.end
        self.counters[key] = counter

    def reserve(self, claims: Iterable[Claim], now: datetime) -> Reservation | Refusal:
        """Reserve every claim or none; claims are checked in the order given."""
        claims = tuple(claims)
        counters = [self.counters[claim.key] for claim in claims]
        for counter, (_, amount) in zip(counters, claims, strict=True):
            end = counter.end
            if end is None or not counter.start <= now < end:  # type: ignore[operator]
                counter.roll(now)
            if counter.committed + counter.reserved + amount > counter.limit:
                return Refusal(counter, amount)
        for counter, (_, amount) in zip(counters, claims, strict=True):
            counter.reserved += amount
        reservation = Reservation(next(self._ids), claims, self.clock() + self.ttl_s)
        self.open[reservation.id] = reservation
        return reservation

    def settle(self, reservation: Reservation, actual: dict[Kind, int], now: datetime) -> None:
        """Replace the reservation by what was consumed (``actual`` per kind)."""
        counters = self.counters
        still_open = reservation.open
        for key, amount in reservation.claims:
            counter = counters.get(key)
            if counter is None:
                continue
            end = counter.end
            if end is None or not counter.start <= now < end:  # type: ignore[operator]
                counter.roll(now)
            if still_open:
                counter.reserved -= amount
            counter.committed += actual.get(key[0], 0)
        self._close(reservation)

    def commit(self, key: CounterKey, amount: int, now: datetime) -> None:
        """Count consumption that no reservation of this counter covered."""
        counter = self.counters.get(key)
        if counter is not None:
            counter.roll(now)
            counter.committed += amount

    def release(self, reservation: Reservation) -> None:
        """Give the reservation back untouched (nothing was consumed)."""
        if reservation.open:
            for claim in reservation.claims:
                counter = self.counters.get(claim.key)
                if counter is not None:
                    counter.reserved -= claim.amount
        self._close(reservation)

    def sweep(self, now: datetime) -> int:
        """Release reservations past their expiry and roll idle counters; returns how many
        reservations expired."""
        moment = self.clock()
        expired = [r for r in self.open.values() if r.expires <= moment]
        for reservation in expired:
            self.release(reservation)
        for counter in self.counters.values():
            counter.roll(now)
        return len(expired)

    def reset(self, key: CounterKey, window: Window | None) -> None:
        counter = self.counters.get(key)
        if counter is not None:
            counter.committed = 0
            if window is not None:
                counter.start, counter.end = window.start, window.end

    def _close(self, reservation: Reservation) -> None:
        reservation.open = False
        self.open.pop(reservation.id, None)
