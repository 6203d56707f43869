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
from datetime import UTC, datetime, timedelta
from typing import Literal, NamedTuple

from tollhouse.governance.store import Scope, WindowSpec
from tollhouse.governance.windows import Window

Kind = Literal["budget", "tokens", "requests", "parallel"]
CounterKey = tuple[Kind, str]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_ALWAYS = (-(2**62), 2**62)  # the bounds of a counter without a window


def micros(moment: datetime) -> int:
    """``moment`` in integer microseconds since the epoch, exactly.

    The request path compares these instead of datetimes: two aware datetimes in
    different tzinfo objects (window bounds carry the budget's ``ZoneInfo``) compare
    ten times slower than two integers.
    """
    return (moment - _EPOCH) // _MICROSECOND


def from_micros(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=value)


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
    # The window again, in epoch microseconds; [0, 0) until the first roll.
    start_us: int = 0
    end_us: int = 0

    def roll(self, now: datetime) -> None:
        """Move to the window containing ``now``; a new window starts with nothing spent."""
        if self.window is None:
            self.start_us, self.end_us = _ALWAYS
            return
        now_us = micros(now)
        if self.start_us <= now_us < self.end_us:
            return
        current = self.window.at(now)
        if self.start is not None and current.start != self.start:
            self.committed = 0
        self.set_window(current.start, current.end)

    def set_window(self, start: datetime, end: datetime) -> None:
        self.start, self.end = start, end
        self.start_us, self.end_us = micros(start), micros(end)

    def set_window_us(self, start_us: int, end_us: int) -> None:
        self.start, self.end = from_micros(start_us), from_micros(end_us)
        self.start_us, self.end_us = start_us, end_us

    @property
    def remaining(self) -> int:
        return max(self.limit - self.committed - self.reserved, 0)


class Claim(NamedTuple):
    key: CounterKey
    amount: int


@dataclass(slots=True)
class Reservation:
    id: int
    keys: tuple[CounterKey, ...]
    amounts: tuple[int, ...]
    expires: float
    open: bool = True

    @property
    def claims(self) -> tuple[Claim, ...]:
        return tuple(map(Claim, self.keys, self.amounts))


@dataclass(frozen=True, slots=True)
class Refusal:
    """The first counter that could not take its claim."""

    counter: Counter
    amount: int


@dataclass(slots=True)
class SharedReservation:
    """A reservation held in Redis, named by the request id."""

    id: str
    keys: tuple[CounterKey, ...]
    amounts: tuple[int, ...]
    generations: tuple[str, ...]  # of each counter when reserved
    reserved: bool = True  # False: admitted by the fallback meter while Redis was away


@dataclass(frozen=True, slots=True)
class Missing:
    """Counters Redis does not have (first use, or Redis lost its data)."""

    keys: tuple[CounterKey, ...]


class MeterUnreachable(Exception):
    """The shared meter (Redis) did not answer."""


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
            counter.set_window(window.start, window.end)
        elif counter.window is None:
            counter.start_us, counter.end_us = _ALWAYS
        self.counters[key] = counter

    def reserve(self, claims: Iterable[Claim], now: datetime) -> Reservation | Refusal:
        """Reserve every claim or none; claims are checked in the order given."""
        pairs = tuple(claims)
        keys = tuple(c[0] for c in pairs)
        return self.reserve_all(keys, tuple(c[1] for c in pairs), micros(now))

    def reserve_all(
        self, keys: tuple[CounterKey, ...], amounts: tuple[int, ...], now_us: int
    ) -> Reservation | Refusal:
        """``reserve`` with the claims as two parallel tuples and the time in epoch
        microseconds (the request path's form)."""
        counters = [self.counters[key] for key in keys]
        for counter, amount in zip(counters, amounts, strict=True):
            if not counter.start_us <= now_us < counter.end_us:
                counter.roll(from_micros(now_us))
            if counter.committed + counter.reserved + amount > counter.limit:
                return Refusal(counter, amount)
        for counter, amount in zip(counters, amounts, strict=True):
            counter.reserved += amount
        reservation = Reservation(next(self._ids), keys, amounts, self.clock() + self.ttl_s)
        self.open[reservation.id] = reservation
        return reservation

    def settle(self, reservation: Reservation, actual: dict[Kind, int], now: datetime) -> None:
        """Replace the reservation by what was consumed (``actual`` per kind)."""
        counters = self.counters
        still_open = reservation.open
        now_us = micros(now)
        for key, amount in zip(reservation.keys, reservation.amounts, strict=True):
            counter = counters.get(key)
            if counter is None:
                continue
            if not counter.start_us <= now_us < counter.end_us:
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
            for key, amount in zip(reservation.keys, reservation.amounts, strict=True):
                counter = self.counters.get(key)
                if counter is not None:
                    counter.reserved -= amount
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
                counter.set_window(window.start, window.end)

    def _close(self, reservation: Reservation) -> None:
        reservation.open = False
        self.open.pop(reservation.id, None)
