"""The meter contract: every guarantee of ``tollhouse.admission.meter.Meter``, checked on
both strategies — ``MemoryMeter`` and ``RedisMeter`` on a real ``redis-server`` — over
a real ledger (``tests/admission/meters.py``).

A Hypothesis state machine drives one meter with random reserve / settle / release /
sweep steps, random amounts and limits, and a clock that moves across window
boundaries, against a plain model of what each counter must hold:

- ``committed + reserved ≤ limit`` for every counter at every step (a settle that
  arrives after its reservation expired still commits what was consumed: only those
  late commits may push a counter past its limit);
- ``reserved`` is the sum of the open reservations' claims, so it is back to 0 once
  everything is settled or released; the store holds exactly the open reservations;
- ``committed`` is the sum of the actual amounts settled in the current window, in
  integer nano-dollars, so sums never drift;
- a refused reservation changes no counter, and the counter it names is the first claim
  that did not fit;
- an expired reservation is released exactly once (by ``sweep``), and a late settle
  commits its actual amount without subtracting the reservation a second time.

The targeted cases below it pin each guarantee on its own, and the two the machine
cannot see: counters start from the ledger, and a lost counter is rebuilt from it
without counting anything twice.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
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
    run_state_machine_as_test,
)
from tests.admission.meters import STRATEGIES, T0, TTL_S, Harness, counter, scope

from tollhouse.admission import Counter, CounterId, Refusal
from tollhouse.admission.meter import Kind
from tollhouse.money import NANO, from_nanos, to_nanos


@pytest.fixture(params=STRATEGIES)
def harness(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Harness]:
    redis_url = request.getfixturevalue("redis_url") if request.param == "redis" else None
    made = Harness(request.param, tmp_path, redis_url)
    try:
        yield made
    finally:
        made.close()


# --- the state machine --------------------------------------------------------------------

# Every counter the machine uses: (kind, id) → window length in seconds (None: no window).
WINDOWS: dict[CounterId, int | None] = {
    ("budget", "key"): 10,
    ("budget", "team"): 60,
    ("budget", "customer"): 3600,
    ("requests", "key"): 5,
    ("requests", "team"): 60,
    ("tokens", "key"): 20,
    ("parallel", "key"): None,
}
KEYS = sorted(WINDOWS)
TTL_US = int(TTL_S * 1_000_000)


def limits() -> st.SearchStrategy[int]:
    return st.one_of(st.integers(1, 20), st.integers(10**9, 10**13))


@dataclass
class Open:
    reservation: Any
    claims: dict[CounterId, int]
    expires_us: int


@dataclass
class Model:
    limits: dict[CounterId, int]
    # (moment, counter, amount) of every commit, and which of them came late.
    commits: list[tuple[datetime, CounterId, int, bool]] = field(default_factory=list)
    open: dict[str, Open] = field(default_factory=dict)

    def window_index(self, counter_id: CounterId, moment: datetime) -> int:
        seconds = WINDOWS[counter_id]
        if seconds is None:
            return 0
        return (moment - T0) // timedelta(seconds=seconds)

    def committed(self, counter_id: CounterId, now: datetime, *, late_only: bool = False) -> int:
        here = self.window_index(counter_id, now)
        return sum(
            amount
            for moment, k, amount, late in self.commits
            if k == counter_id and self.window_index(k, moment) == here and (late or not late_only)
        )

    def reserved(self, counter_id: CounterId) -> int:
        return sum(o.claims.get(counter_id, 0) for o in self.open.values())


class MeterMachine(RuleBasedStateMachine):
    reservations = Bundle("reservations")

    def __init__(self, harness: Harness) -> None:
        super().__init__()
        self.h = harness
        harness.fresh()
        self.model = Model({})
        self.closed: dict[str, Any] = {}
        self.finished: set[str] = set()  # released after expiring: no settle follows

    @property
    def meter(self) -> Any:
        return self.h.meter

    @initialize(data=st.data())
    def install_counters(self, data: st.DataObject) -> None:
        new = {}
        for counter_id in KEYS:
            limit = data.draw(limits(), label=f"limit {counter_id}")
            self.model.limits[counter_id] = limit
            owner = scope("key", counter_id[1])
            new[counter_id] = counter(counter_id[0], limit, WINDOWS[counter_id], owner)
        self.h.track(new)

    # -- steps ------------------------------------------------------------------------------

    @rule(
        target=reservations,
        ids=st.lists(st.sampled_from(KEYS), min_size=1, max_size=len(KEYS), unique=True),
        money=st.one_of(st.integers(0, 5), st.integers(0, 4 * 10**12)),
        tokens=st.one_of(st.integers(0, 5), st.integers(0, 4 * 10**12)),
    )
    def reserve(self, ids: list[CounterId], money: int, tokens: int) -> object:
        amounts: dict[Kind, int] = {"budget": money, "tokens": tokens, "requests": 1, "parallel": 1}
        claims = [(counter_id, amounts[counter_id[0]]) for counter_id in ids]
        now = self.h.now
        before = {k: (c.committed, c.reserved) for k, c in self.h.counters().items()}
        fits = [
            self.model.committed(i, now) + self.model.reserved(i) + amount <= self.model.limits[i]
            for i, amount in claims
        ]
        outcome = self.h.reserve(*claims)
        if isinstance(outcome, Refusal):
            event(f"refused on {outcome.counter.kind}")
            assert not all(fits)
            first_id, first_amount = claims[fits.index(False)]
            assert outcome.counter is self.meter.counters[first_id]
            assert outcome.amount == first_amount
            after = {k: (c.committed, c.reserved) for k, c in self.h.counters().items()}
            assert after == before  # all or nothing
            assert outcome.counter.remaining < first_amount or first_amount == 0
            return multiple()
        assert all(fits)
        assert outcome.id in self.h.open_ids()
        claimed = dict(claims)
        self.model.open[outcome.id] = Open(outcome, claimed, self.h.now_us + TTL_US)
        return outcome

    @rule(reservation=consumes(reservations), data=st.data())
    def settle(self, reservation: Any, data: st.DataObject) -> None:
        if reservation.id in self.finished:
            return
        claimed = dict(zip(reservation.ids, reservation.amounts, strict=True))
        # What was consumed never exceeds what was reserved for it (the worst case).
        actual: dict[Kind, int] = {
            counter_id[0]: data.draw(st.integers(0, amount), label=f"actual {counter_id[0]}")
            for counter_id, amount in claimed.items()
            if counter_id[0] != "parallel"
        }
        late = reservation.id not in self.model.open
        event("late settle" if late else "settle")
        self.h.settle(reservation, actual)
        self.model.open.pop(reservation.id, None)
        for counter_id in reservation.ids:
            amount = actual.get(counter_id[0], 0)
            self.model.commits.append((self.h.now, counter_id, amount, late))
        assert reservation.id not in self.h.open_ids()

    @rule(reservation=consumes(reservations))
    def release(self, reservation: Any) -> None:
        self.h.release(reservation)
        self.model.open.pop(reservation.id, None)
        assert reservation.id not in self.h.open_ids()
        # Releasing again gives nothing back a second time.
        before = {k: c.reserved for k, c in self.h.counters().items()}
        self.h.release(reservation)
        assert {k: c.reserved for k, c in self.h.counters().items()} == before

    @rule(reservation=consumes(reservations), data=st.data())
    def expire_then_settle(self, reservation: Any, data: st.DataObject) -> None:
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
        self.h.advance(seconds)

    @rule()
    def sweep(self) -> None:
        due = {i for i, o in self.model.open.items() if o.expires_us <= self.h.now_us}
        expired = self.h.sweep()
        assert expired == len(due)
        event(f"sweep expired {min(expired, 2)}+")
        for ident in due:
            reservation = self.model.open.pop(ident).reservation
            assert ident not in self.h.open_ids()
            self.closed[ident] = reservation
        # Exactly once: a second sweep at the same moment expires nothing more.
        assert self.h.sweep() == 0

    @precondition(lambda self: self.closed)
    @rule(data=st.data())
    def release_expired_again(self, data: st.DataObject) -> None:
        ident = data.draw(st.sampled_from(sorted(self.closed)))
        before = {k: c.reserved for k, c in self.h.counters().items()}
        self.h.release(self.closed[ident])
        self.finished.add(ident)
        assert {k: c.reserved for k, c in self.h.counters().items()} == before

    @precondition(lambda self: self.h.strategy == "memory")
    @rule(counter_id=st.sampled_from(KEYS))
    def reload(self, counter_id: CounterId) -> None:
        """Memory: install a counter rebuilt from the ledger (as the engine does after a
        configuration change) while reservations hold capacity on the old one."""
        old = self.meter.counters[counter_id]
        new = Counter(counter_id[0], old.limit, old.window, old.scope)
        spec = old.window.at(self.h.now) if old.window else None
        # The ledger holds exactly the committed amounts of the current window.
        new.committed = self.model.committed(counter_id, self.h.now) if spec else old.committed
        self.meter.load(counter_id, new, spec)
        assert self.meter.counters[counter_id].reserved == old.reserved

    # -- invariants -------------------------------------------------------------------------

    @invariant()
    def counters_match_the_model(self) -> None:
        now = self.h.now
        for counter_id, found in self.h.counters(*KEYS).items():
            limit = self.model.limits[counter_id]
            if WINDOWS[counter_id] is not None:
                committed = self.model.committed(counter_id, now)
                late = self.model.committed(counter_id, now, late_only=True)
                assert found.committed == committed
                assert found.committed + found.reserved <= limit + late
            assert found.reserved == self.model.reserved(counter_id)
            assert found.reserved >= 0
            assert found.remaining == max(limit - found.committed - found.reserved, 0)

    @invariant()
    def open_reservations_are_the_models(self) -> None:
        assert self.h.open_ids() == set(self.model.open)
        if not self.model.open:
            assert all(c.reserved == 0 for c in self.h.counters(*KEYS).values())

    @invariant()
    def money_in_nanos_sums_exactly(self) -> None:
        now = self.h.now
        for counter_id, found in self.h.counters(*KEYS).items():
            if counter_id[0] != "budget":
                continue
            parts = [
                from_nanos(amount)
                for moment, k, amount, _ in self.model.commits
                if k == counter_id
                and self.model.window_index(k, moment) == self.model.window_index(k, now)
            ]
            total = sum(parts, Decimal(0))
            assert total == from_nanos(found.committed)
            assert to_nanos(total) == found.committed


@pytest.mark.slow
def test_random_traffic_keeps_every_guarantee(harness: Harness) -> None:
    examples = 150 if harness.strategy == "memory" else 60
    run_state_machine_as_test(
        lambda: MeterMachine(harness),
        settings=settings(max_examples=examples, stateful_step_count=40, deadline=None),
    )


# --- one guarantee at a time --------------------------------------------------------------

BUDGET: CounterId = ("budget", "b1")
REQUESTS: CounterId = ("requests", "r1")


def budget_of(h: Harness, limit: int, seconds: int | None = 60) -> None:
    h.track({BUDGET: counter("budget", limit, seconds)})


def test_a_refused_reservation_changes_nothing_on_any_counter(harness):
    h = harness
    h.track({BUDGET: counter("budget", 100), REQUESTS: counter("requests", 5)})
    h.held((BUDGET, 60))
    refused = h.reserve((REQUESTS, 1), (BUDGET, 41))
    assert isinstance(refused, Refusal)
    assert refused.counter.kind == "budget" and refused.amount == 41
    assert h.counter(REQUESTS).reserved == 0
    assert h.counter(BUDGET).reserved == 60
    assert len(h.open_ids()) == 1


def test_the_refusal_names_the_first_claim_that_does_not_fit_as_the_store_holds_it(harness):
    h = harness
    h.track({REQUESTS: counter("requests", 2), BUDGET: counter("budget", 100)})
    first = h.held((REQUESTS, 1), (BUDGET, 30))
    h.settle(first, {"requests": 1, "budget": 25})
    h.held((REQUESTS, 1), (BUDGET, 10))
    refused = h.reserve((REQUESTS, 1), (BUDGET, 1000))  # both full: requests comes first
    assert isinstance(refused, Refusal)
    assert refused.counter is h.meter.counters[REQUESTS]
    assert (refused.amount, refused.counter.committed, refused.counter.reserved) == (1, 1, 1)
    assert refused.counter.start == T0  # the window it refused in
    refused = h.reserve((BUDGET, 66))
    assert isinstance(refused, Refusal)
    assert (refused.counter.committed, refused.counter.reserved) == (25, 10)
    assert refused.counter.remaining == 65


def test_settle_replaces_the_reservation_by_what_was_consumed(harness):
    h = harness
    h.track({BUDGET: counter("budget", 100), REQUESTS: counter("requests", 5)})
    held = h.held((REQUESTS, 1), (BUDGET, 70))
    found = h.counters(BUDGET, REQUESTS)
    assert [(c.committed, c.reserved) for c in found.values()] == [(0, 70), (0, 1)]
    h.settle(held, {"budget": 42, "requests": 1, "tokens": 9})
    found = h.counters(BUDGET, REQUESTS)
    assert [(c.committed, c.reserved) for c in found.values()] == [(42, 0), (1, 0)]
    assert h.open_ids() == set()


def test_release_gives_the_reservation_back_untouched_and_only_once(harness):
    h = harness
    budget_of(h, 100)
    held = h.held((BUDGET, 70))
    other = h.held((BUDGET, 20))
    h.release(held)
    assert (h.counter(BUDGET).committed, h.counter(BUDGET).reserved) == (0, 20)
    h.release(held)
    assert h.counter(BUDGET).reserved == 20
    assert h.open_ids() == {other.id}


def test_an_expired_reservation_is_released_once_and_a_late_settle_still_commits(harness):
    h = harness
    budget_of(h, 100)
    held = h.held((BUDGET, 70))
    h.advance(TTL_S - 0.001)
    assert h.sweep() == 0
    h.advance(0.001)
    assert h.sweep() == 1
    assert h.open_ids() == set()
    found = h.counter(BUDGET)
    assert (found.committed, found.reserved) == (0, 0)
    assert h.sweep() == 0
    h.settle(held, {"budget": 42})
    found = h.counter(BUDGET)
    assert (found.committed, found.reserved) == (42, 0)


def test_settle_commits_to_the_window_it_happens_in_and_a_new_window_starts_empty(harness):
    h = harness
    budget_of(h, 100, seconds=10)
    held = h.held((BUDGET, 50))
    h.advance(12)  # windows of 10 s from the anchor, T0
    h.settle(held, {"budget": 30})
    found = h.counter(BUDGET)
    assert (found.committed, found.reserved) == (30, 0)
    assert found.start == T0 + timedelta(seconds=10)
    h.advance(8)
    h.sweep()
    assert h.counter(BUDGET).committed == 0
    held = h.held((BUDGET, 100))  # the whole limit again, in the new window
    assert h.counter(BUDGET).start == T0 + timedelta(seconds=20)


def test_reset_zeroes_committed_and_keeps_reservations(harness):
    h = harness
    budget_of(h, 100)
    first = h.held((BUDGET, 40))
    h.settle(first, {"budget": 40})
    h.held((BUDGET, 50))
    assert isinstance(h.reserve((BUDGET, 11)), Refusal)
    h.reset(BUDGET)
    found = h.counter(BUDGET)
    assert (found.committed, found.reserved) == (0, 50)
    h.held((BUDGET, 50))


def test_settle_tells_each_budget_its_spend_before_and_after(harness):
    h = harness
    h.track({BUDGET: counter("budget", 100), REQUESTS: counter("requests", 5)})
    heard: list[tuple[str, int, int]] = []

    def on_spent(spent: Counter, before: int, after: int) -> None:
        heard.append((spent.kind, before, after))

    first = h.held((REQUESTS, 1), (BUDGET, 30))
    h.settle(first, {"budget": 20, "requests": 1}, on_spent=on_spent)
    second = h.held((BUDGET, 30))
    h.settle(second, {"budget": 25}, on_spent=on_spent)
    assert heard == [("budget", 0, 20), ("budget", 20, 45)]


def test_amounts_past_2_to_the_53_stay_exact(harness):
    h = harness
    huge = 2**62 + 1  # a saturated estimate is 2^63 - 1; doubles round past 2^53
    budget_of(h, 2**63 - 1)
    heard: list[tuple[int, int]] = []
    held = h.held((BUDGET, huge))
    assert h.counter(BUDGET).reserved == huge
    h.settle(
        held, {"budget": huge}, on_spent=lambda _, before, after: heard.append((before, after))
    )
    assert heard == [(0, huge)]
    assert (h.counter(BUDGET).committed, h.counter(BUDGET).reserved) == (huge, 0)
    assert isinstance(h.reserve((BUDGET, 2**62 - 1)), Refusal)
    h.held((BUDGET, 2**62 - 2))


def test_a_zero_claim_settles_releases_and_expires(harness):
    """An unpriced model's worst-case cost is 0: its budget claim is 0, and must pass
    through every operation like any other."""
    h = harness
    h.track({BUDGET: counter("budget", 100), REQUESTS: counter("requests", 5)})
    settled = h.held((REQUESTS, 1), (BUDGET, 0))
    released = h.held((REQUESTS, 1), (BUDGET, 0))
    expired = h.held((REQUESTS, 1), (BUDGET, 0))
    h.settle(settled, {"requests": 1, "budget": 0})
    h.release(released)
    h.advance(TTL_S)
    assert h.sweep() == 1
    assert h.open_ids() == set()
    h.settle(expired, {"requests": 1, "budget": 0})
    found = h.counters(BUDGET, REQUESTS)
    assert [(c.committed, c.reserved) for c in found.values()] == [(0, 0), (2, 0)]


def test_counters_built_after_a_reservation_count_its_consumption_too(harness):
    h = harness
    budget_of(h, 100)
    held = h.held((BUDGET, 30))
    later: CounterId = ("budget", "b2")
    h.track({later: counter("budget", 1000)})  # a budget added while the request runs
    h.settle(held, {"budget": 25}, uncovered=(later,))
    assert h.counter(BUDGET).committed == 25
    assert h.counter(later).committed == 25
    assert h.counter(later).reserved == 0


def test_a_reservation_of_no_counters_holds_nothing(harness):
    h = harness
    held = h.held()
    assert held.ids == ()
    h.settle(held, {"budget": 5, "requests": 1})
    h.release(held)


@given(st.lists(st.decimals(min_value=0, max_value=10**6, places=9), max_size=200))
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
def test_sums_of_costs_in_nanos_never_drift(harness, costs):
    h = harness
    h.fresh()
    nanos = [to_nanos(c) for c in costs]
    total = sum(costs, Decimal(0))
    assert sum(nanos) == to_nanos(total)
    assert from_nanos(sum(nanos)) == total.quantize(NANO)
    budget_of(h, sum(nanos) or 1, seconds=None)
    for cost in nanos:
        h.settle(h.held((BUDGET, cost)), {"budget": cost})
    found = h.counter(BUDGET)
    assert from_nanos(found.committed) == total
    assert found.reserved == 0


# --- the ledger -------------------------------------------------------------------------------


def test_a_new_counter_starts_from_the_ledger_total_of_its_window(harness):
    h = harness
    owner = scope("team", "t1")
    h.advance(-20)  # before the counter's first window, which starts at T0
    h.record("req_old", owner, cost="0.000000007", tokens=100)
    h.advance(20)
    h.record("req_1", owner, cost="0.000000011", tokens=3)  # left buffered in the recorder
    h.record("req_2", owner, cost="0.000000012", tokens=4)
    h.record("req_other", scope("team", "t2"), cost="1", tokens=1000)
    ids: dict[CounterId, Counter] = {
        ("budget", "tb"): counter("budget", 10**6, 10, owner),
        ("tokens", "tr"): counter("tokens", 10**6, 10, owner),
        ("requests", "tr"): counter("requests", 10**6, 10, owner),
        ("parallel", "k"): counter("parallel", 4, None, owner),
    }
    h.track(ids)
    found = h.counters(*ids)
    assert [c.committed for c in found.values()] == [23, 7, 2, 0]
    h.held(*((i, 1) for i in ids))  # Redis builds them on first use: same values
    found = h.counters(*ids)
    assert [(c.committed, c.reserved) for c in found.values()] == [(23, 1), (7, 1), (2, 1), (0, 1)]


def test_a_lost_counter_is_rebuilt_from_the_ledger_counting_each_record_once(harness):
    """Memory loses its counters with the process (a restart); Redis loses its data
    (restart, flush, failover) while the replicas run on."""
    h = harness
    owner = scope("key", "k7")
    h.track({BUDGET: counter("budget", 10**6, 3600, owner)})
    for n in range(3):
        held = h.held((BUDGET, 50))
        h.settle(held, {"budget": 10 + n})
        h.record(held.id, owner, cost=f"0.0000000{10 + n}")  # 10, 11, 12 nano-dollars
    assert h.counter(BUDGET).committed == 33
    h.lose_counters()
    h.track({BUDGET: counter("budget", 10**6, 3600, owner)})
    found = h.counter(BUDGET)
    assert (found.committed, found.reserved) == (33, 0)
    held = h.held((BUDGET, 50))
    h.settle(held, {"budget": 7})
    assert h.counter(BUDGET).committed == 40
