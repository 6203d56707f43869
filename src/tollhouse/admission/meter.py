"""Counters, and the ``Meter`` every admission strategy implements.

Every limited quantity is a ``Counter``, named by a ``CounterId`` ``(kind, id)``: one
budget's spend in nano-dollars (``("budget", budget_id)``), one rate limit's tokens or
requests (``("tokens" | "requests", rate_limit_id)``), one virtual key's requests in
flight (``("parallel", key_id)``), one prepaid account's usage in nano-dollars against
its funding (``("credits", account_id)``, no window). A request ``reserve``s its worst case on every
counter it touches, all or nothing; it later ``settle``s to what it consumed, or is
``release``d. The invariant, for every counter at every moment, is

    committed + reserved ≤ limit

Two strategies keep counters: ``MemoryMeter`` (``memory.py``, one process) and
``RedisMeter`` (``redis.py``, every replica, one Redis function call per operation).
``app.py`` picks one at start-up; the engine only sees this Protocol, and
``tests/admission/test_meter_contract.py`` checks every guarantee below on both.

Time is passed in (``now_us``, ``now``, ``created``), never read, so the contract suite
can move it across windows and expiries.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, Protocol, TypeVar

from tollhouse.admission.snapshot import Scope, WindowSpec

# The kinds of counter a reservation may claim; a prepaid account's usage ("credits")
# is claimed in the same reservation as budgets and limits.
Kind = Literal["budget", "tokens", "requests", "parallel", "credits"]
CounterId = tuple[Kind, str]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
ALWAYS = (-(2**62), 2**62)  # the bounds of a counter without a window


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
    # Whose ledger records it counts, when not its scope's: ("agent", "<kind>:<id>[/<persona>]")
    # for the agent token budgets (admission/agents.py).
    payer: tuple[str, str] | None = None

    def roll(self, now: datetime) -> None:
        """Move to the window containing ``now``; a new window starts with nothing spent."""
        if self.window is None:
            self.start_us, self.end_us = ALWAYS
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


@dataclass(frozen=True, slots=True)
class Refusal:
    """The first counter, in the order claimed, that could not take its amount."""

    counter: Counter
    amount: int


class MeterUnreachable(Exception):
    """The shared meter (Redis) did not answer."""


# Called after a settle for each budget counter it committed to: (counter, its committed
# value before the settle, after it). Alerts work out crossed thresholds from these.
Spent = Callable[[Counter, int, int], None]


class Held(Protocol):
    """A reservation as the engine sees it: which counters it claimed."""

    @property
    def ids(self) -> tuple[CounterId, ...]: ...


H = TypeVar("H", bound=Held)


class Meter(Protocol[H]):
    """Where counters live. Every guarantee is checked on both strategies by
    ``tests/admission/test_meter_contract.py``:

    - ``reserve`` takes every amount or none; a refusal names the first counter that
      could not take its amount, and changes no counter;
    - ``settle`` replaces a reservation by what was consumed, in the window the
      consumption happened in; ``release`` gives it back untouched, once;
    - a reservation neither settled nor released expires ``ttl_s`` after it was taken
      (``sweep``); its late settle still commits what was consumed;
    - a new counter, or one the meter lost, starts from the ledger's total for its
      window, and counts nothing twice.
    """

    # Every counter this process knows: for ``MemoryMeter`` the counters themselves, for
    # ``RedisMeter`` what Redis last reported (headers, refusals and admin views read it).
    counters: dict[CounterId, Counter]

    @property
    def pending(self) -> int:
        """Settles accepted but not yet applied (always 0 in memory)."""
        ...

    async def start(self) -> None: ...

    async def stop(self, timeout_s: float) -> None:
        """Apply every pending settle (bounded by ``timeout_s``), then stop."""
        ...

    async def flush(self) -> None:
        """Apply every pending settle now."""
        ...

    async def track(self, new: Mapping[CounterId, Counter], now: datetime) -> None:
        """Start keeping ``new`` counters, their committed values rebuilt from the ledger
        for the window containing ``now``; counters already kept are left alone."""
        ...

    async def reserve(
        self,
        rid: str,
        ids: tuple[CounterId, ...],
        amounts: tuple[int, ...],
        now_us: int,
        fail_open: bool = False,
    ) -> H | Refusal:
        """Reserve ``amounts[i]`` on ``ids[i]``, every one or none, checked in order.

        ``rid`` names the reservation (the request id). Raises ``MeterUnreachable`` when
        the store does not answer, unless ``fail_open``: then this process's own view
        decides and the usage is merged into the store once it answers."""
        ...

    def settle(
        self,
        held: H,
        actual: Mapping[Kind, int],
        created: datetime,
        on_spent: Spent | None = None,
        uncovered: tuple[CounterId, ...] = (),
    ) -> None:
        """Replace ``held`` by ``actual`` (consumed, per kind) at ``created``. Counters
        in ``uncovered`` (built after ``held`` was taken, from a ledger without this
        consumption) count it too. Never blocks."""
        ...

    def release(self, held: H) -> None:
        """Give ``held`` back untouched: nothing was consumed. Never blocks."""
        ...

    async def sweep(self, now: datetime) -> int:
        """Release reservations expired at ``now``; returns how many."""
        ...

    async def refresh(self, ids: list[CounterId], now: datetime) -> None:
        """Bring ``counters`` up to date with the store (Redis: every replica's usage)."""
        ...

    async def reset(self, ids: list[CounterId], now: datetime) -> None:
        """Start the windows containing ``now`` afresh: committed 0, reservations kept."""
        ...

    async def publish_limits(self, ids: list[CounterId]) -> None:
        """Make these counters' current limits (prepaid accounts': at their revision) the
        ones every replica checks against, where newer than what the store has."""
        ...
