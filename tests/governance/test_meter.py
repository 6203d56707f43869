"""The in-process meter (``governance/meter.py``) under random traffic.

A Hypothesis state machine drives one ``MemoryMeter`` with random reserve / settle /
release / sweep / reload steps, random amounts and limits, and a clock that moves across
window boundaries, against a plain model of what each counter must hold:

- ``committed + reserved ≤ limit`` for every counter at every step (a settle that
  arrives after its reservation expired still commits what was consumed: only those
  late commits may push a counter past its limit);
- ``reserved`` is the sum of the open reservations' claims, so it is back to 0 once
  everything is settled or released;
- ``committed`` is the sum of the actual amounts settled in the current window, in
  integer nano-dollars, so sums never drift;
- a refused reservation changes no counter, and the counter it names is the first claim
  that did not fit;
- an expired reservation is released exactly once (by ``sweep``), and a late settle
  commits its actual amount without subtracting the reservation a second time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import event, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
)

from tollhouse.governance.meter import (
    Claim,
    Counter,
    CounterKey,
    Kind,
    MemoryMeter,
    Refusal,
    Reservation,
)
from tollhouse.governance.store import Scope, WindowSpec
from tollhouse.windows import parse_duration
from tollhouse.money import NANO, from_nanos, to_nanos

T0 = datetime(2025, 3, 30, 0, 59, 50, tzinfo=UTC)
TTL_S = 30.0

# Every counter the machine uses: (kind, id) → window length in seconds (None: no window).
WINDOWS: dict[CounterKey, int | None] = {
    ("budget", "key"): 10,
    ("budget", "team"): 60,
    ("budget", "customer"): 3600,
    ("requests", "key"): 5,
    ("requests", "team"): 60,
    ("tokens", "key"): 20,
    ("parallel", "key"): None,
}
KEYS = sorted(WINDOWS)


def scope(name: str) -> Scope:
    return Scope("key", name, name, None, None)


def window_spec(seconds: int | None) -> WindowSpec | None:
    if seconds is None:
        return None
    return WindowSpec(parse_duration(f"{seconds}s"), T0)


def limits() -> st.SearchStrategy[int]:
    return st.one_of(st.integers(1, 20), st.integers(10**9, 10**13))


@dataclass
class Open:
    reservation: Reservation
    claims: dict[CounterKey, int]
    expires: float


@dataclass
class Model:
    limits: dict[CounterKey, int]
    # (moment, counter, amount) of every commit, and which of them came late.
    commits: list[tuple[datetime, CounterKey, int, bool]] = field(default_factory=list)
    open: dict[int, Open] = field(default_factory=dict)

    def window_index(self, key: CounterKey, moment: datetime) -> int:
        seconds = WINDOWS[key]
        if seconds is None:
            return 0
        return (moment - T0) // timedelta(seconds=seconds)

    def committed(self, key: CounterKey, now: datetime, *, late_only: bool = False) -> int:
        here = self.window_index(key, now)
        return sum(
            amount
            for moment, k, amount, late in self.commits
            if k == key and self.window_index(k, moment) == here and (late or not late_only)
        )

    def reserved(self, key: CounterKey) -> int:
        return sum(o.claims.get(key, 0) for o in self.open.values())


class MeterMachine(RuleBasedStateMachine):
    reservations = Bundle("reservations")

    def __init__(self) -> None:
        super().__init__()
        self.clock = 1000.0
        self.now = T0
        self.meter = MemoryMeter(ttl_s=TTL_S, clock=lambda: self.clock)
        self.model = Model({})
        self.closed: dict[int, Reservation] = {}

    @initialize(data=st.data())
    def install_counters(self, data: st.DataObject) -> None:
        for key in KEYS:
            limit = data.draw(limits(), label=f"limit {key}")
            self.model.limits[key] = limit
            counter = Counter(key[0], limit, window_spec(WINDOWS[key]), scope(key[1]))
            spec = counter.window
            self.meter.load(key, counter, spec.at(self.now) if spec else None)

    # -- steps ------------------------------------------------------------------------------

    @rule(
        target=reservations,
        keys=st.lists(st.sampled_from(KEYS), min_size=1, max_size=len(KEYS), unique=True),
        money=st.one_of(st.integers(0, 5), st.integers(0, 4 * 10**12)),
        tokens=st.one_of(st.integers(0, 5), st.integers(0, 4 * 10**12)),
    )
    def reserve(self, keys: list[CounterKey], money: int, tokens: int) -> object:
        amounts: dict[Kind, int] = {"budget": money, "tokens": tokens, "requests": 1, "parallel": 1}
        claims = [Claim(key, amounts[key[0]]) for key in keys]
        for key in KEYS:
            self.meter.counters[key].roll(self.now)
        before = {k: (c.committed, c.reserved) for k, c in self.meter.counters.items()}
        fits = [
            self.model.committed(c.key, self.now) + self.model.reserved(c.key) + c.amount
            <= self.model.limits[c.key]
            for c in claims
        ]
        outcome = self.meter.reserve(claims, self.now)
        if isinstance(outcome, Refusal):
            event(f"refused on {outcome.counter.kind}")
            assert not all(fits)
            first = claims[fits.index(False)]
            assert outcome.counter is self.meter.counters[first.key]
            assert outcome.amount == first.amount
            after = {k: (c.committed, c.reserved) for k, c in self.meter.counters.items()}
            assert after == before  # all or nothing
            assert outcome.counter.remaining < first.amount or first.amount == 0
            return multiple()
        assert all(fits)
        assert outcome.open and outcome.id in self.meter.open
        self.model.open[outcome.id] = Open(
            outcome, {c.key: c.amount for c in claims}, self.clock + TTL_S
        )
        return outcome

    @rule(reservation=consumes(reservations), data=st.data())
    def settle(self, reservation: Reservation, data: st.DataObject) -> None:
        claimed = {c.key[0]: c.amount for c in reservation.claims}
        # What was consumed never exceeds what was reserved for it (the worst case).
        actual: dict[Kind, int] = {
            kind: data.draw(st.integers(0, amount), label=f"actual {kind}")
            for kind, amount in claimed.items()
            if kind != "parallel"
        }
        late = reservation.id not in self.model.open
        event("late settle" if late else "settle")
        self.meter.settle(reservation, actual, self.now)
        self.model.open.pop(reservation.id, None)
        for claim in reservation.claims:
            amount = actual.get(claim.key[0], 0)
            self.model.commits.append((self.now, claim.key, amount, late))
        assert not reservation.open
        assert reservation.id not in self.meter.open

    @rule(reservation=consumes(reservations))
    def release(self, reservation: Reservation) -> None:
        self.meter.release(reservation)
        self.model.open.pop(reservation.id, None)
        assert not reservation.open
        # Releasing again gives nothing back a second time.
        before = {k: c.reserved for k, c in self.meter.counters.items()}
        self.meter.release(reservation)
        assert {k: c.reserved for k, c in self.meter.counters.items()} == before

    @rule(reservation=consumes(reservations), data=st.data())
    def expire_then_settle(self, reservation: Reservation, data: st.DataObject) -> None:
        """The request outlives its reservation: swept, then settled late."""
        self.advance(TTL_S)
        self.sweep()
        self.settle(reservation, data)

    @rule(
        seconds=st.one_of(
            st.floats(0, 3, allow_nan=False),
            st.sampled_from([TTL_S, 60, 3600]),
            st.integers(0, 4000),
        )
    )
    def advance(self, seconds: float) -> None:
        self.clock += seconds
        self.now += timedelta(seconds=seconds)

    @rule()
    def sweep(self) -> None:
        due = {i for i, o in self.model.open.items() if o.expires <= self.clock}
        expired = self.meter.sweep(self.now)
        assert expired == len(due)
        event(f"sweep expired {min(expired, 2)}+")
        for ident in due:
            reservation = self.model.open.pop(ident).reservation
            assert not reservation.open
            self.closed[ident] = reservation
        # Exactly once: a second sweep at the same moment expires nothing more.
        assert self.meter.sweep(self.now) == 0

    @precondition(lambda self: self.closed)
    @rule(data=st.data())
    def release_expired_again(self, data: st.DataObject) -> None:
        ident = data.draw(st.sampled_from(sorted(self.closed)))
        before = {k: c.reserved for k, c in self.meter.counters.items()}
        self.meter.release(self.closed[ident])
        assert {k: c.reserved for k, c in self.meter.counters.items()} == before

    @rule(key=st.sampled_from(KEYS))
    def reload(self, key: CounterKey) -> None:
        """Rebuild a counter from the ledger (as admission does after a config change)."""
        old = self.meter.counters[key]
        counter = Counter(key[0], old.limit, old.window, old.scope)
        window = old.window.at(self.now) if old.window else None
        # The ledger holds exactly the committed amounts of the current window.
        counter.committed = self.model.committed(key, self.now) if window else old.committed
        self.meter.load(key, counter, window)
        assert self.meter.counters[key].reserved == old.reserved

    # -- invariants ---------------------------------------------------------------------------

    @invariant()
    def counters_match_the_model(self) -> None:
        for key in KEYS:
            counter = self.meter.counters[key]
            counter.roll(self.now)
            limit = self.model.limits[key]
            if WINDOWS[key] is not None:
                committed = self.model.committed(key, self.now)
                late = self.model.committed(key, self.now, late_only=True)
                assert counter.committed == committed
                assert counter.committed + counter.reserved <= limit + late
            assert counter.reserved == self.model.reserved(key)
            assert counter.reserved >= 0
            assert counter.remaining == max(limit - counter.committed - counter.reserved, 0)

    @invariant()
    def open_reservations_are_the_models(self) -> None:
        assert set(self.meter.open) == set(self.model.open)
        if not self.model.open:
            assert all(c.reserved == 0 for c in self.meter.counters.values())

    @invariant()
    def money_in_nanos_sums_exactly(self) -> None:
        for key in KEYS:
            if key[0] != "budget":
                continue
            counter = self.meter.counters[key]
            parts = [
                from_nanos(amount)
                for moment, k, amount, _ in self.model.commits
                if k == key
                and self.model.window_index(k, moment) == self.model.window_index(k, self.now)
            ]
            total = sum(parts, Decimal(0))
            assert total == from_nanos(counter.committed)
            assert to_nanos(total) == counter.committed


TestMeter = MeterMachine.TestCase
TestMeter.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


# --- targeted cases -----------------------------------------------------------------------


def make_meter(limit: int, seconds: int | None = 60) -> tuple[MemoryMeter, list[float]]:
    clock = [0.0]
    meter = MemoryMeter(ttl_s=TTL_S, clock=lambda: clock[0])
    counter = Counter("budget", limit, window_spec(seconds), scope("key"))
    meter.load(("budget", "key"), counter, counter.window.at(T0) if counter.window else None)
    return meter, clock


def test_a_refused_reservation_changes_nothing_on_any_counter():
    meter, _ = make_meter(100)
    meter.load(("requests", "key"), Counter("requests", 5, window_spec(60), scope("key")), None)
    held = meter.reserve([Claim(("budget", "key"), 60)], T0)
    assert isinstance(held, Reservation)
    refused = meter.reserve([Claim(("requests", "key"), 1), Claim(("budget", "key"), 41)], T0)
    assert isinstance(refused, Refusal)
    assert refused.counter.kind == "budget" and refused.amount == 41
    assert meter.counters[("requests", "key")].reserved == 0
    assert meter.counters[("budget", "key")].reserved == 60
    assert len(meter.open) == 1


def test_an_expired_reservation_is_released_once_and_a_late_settle_still_commits():
    meter, clock = make_meter(100)
    held = meter.reserve([Claim(("budget", "key"), 70)], T0)
    assert isinstance(held, Reservation)
    clock[0] = TTL_S - 0.001
    assert meter.sweep(T0) == 0
    clock[0] = TTL_S
    assert meter.sweep(T0) == 1
    counter = meter.counters[("budget", "key")]
    assert (counter.committed, counter.reserved) == (0, 0)
    assert meter.sweep(T0) == 0
    meter.release(held)
    assert counter.reserved == 0
    meter.settle(held, {"budget": 42}, T0)
    assert (counter.committed, counter.reserved) == (42, 0)


def test_settle_commits_to_the_window_it_happens_in():
    meter, _ = make_meter(100, seconds=10)
    held = meter.reserve([Claim(("budget", "key"), 50)], T0)
    assert isinstance(held, Reservation)
    later = T0 + timedelta(seconds=12)
    meter.settle(held, {"budget": 30}, later)
    counter = meter.counters[("budget", "key")]
    assert (counter.committed, counter.reserved) == (30, 0)
    assert counter.start == T0 + timedelta(seconds=10)
    meter.sweep(T0 + timedelta(seconds=20))
    assert counter.committed == 0


def test_reset_zeroes_committed_and_keeps_reservations():
    meter, _ = make_meter(100)
    first = meter.reserve([Claim(("budget", "key"), 40)], T0)
    assert isinstance(first, Reservation)
    meter.settle(first, {"budget": 40}, T0)
    second = meter.reserve([Claim(("budget", "key"), 50)], T0)
    assert isinstance(second, Reservation)
    assert isinstance(meter.reserve([Claim(("budget", "key"), 11)], T0), Refusal)
    meter.reset(("budget", "key"), None)
    counter = meter.counters[("budget", "key")]
    assert (counter.committed, counter.reserved) == (0, 50)
    assert isinstance(meter.reserve([Claim(("budget", "key"), 50)], T0), Reservation)


@given(st.lists(st.decimals(min_value=0, max_value=10**6, places=9), max_size=200))
def test_sums_of_costs_in_nanos_never_drift(costs):
    nanos = [to_nanos(c) for c in costs]
    total = sum(costs, Decimal(0))
    assert sum(nanos) == to_nanos(total)
    assert from_nanos(sum(nanos)) == total.quantize(NANO)
    meter, _ = make_meter(sum(nanos) or 1, seconds=None)
    for cost in nanos:
        held = meter.reserve([Claim(("budget", "key"), cost)], T0)
        assert isinstance(held, Reservation)
        meter.settle(held, {"budget": cost}, T0)
    counter = meter.counters[("budget", "key")]
    assert from_nanos(counter.committed) == total
    assert counter.reserved == 0
