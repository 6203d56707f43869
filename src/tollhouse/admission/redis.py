"""The shared meter: counters in Redis for every replica (docs/deployment.md).

A request's check-and-reserve across all its counters is one call of ``meter.lua``'s
``tollhouse_reserve`` (``functions.py``). A counter Redis lacks — first use, or Redis
lost its data — is rebuilt from the ledger and the reservation tried again.

Each replica keeps a ``MemoryMeter`` beside it (``local``): the values Redis last
reported, which the response headers, refusal messages and admin views read; and, while
Redis is unreachable, the meter that admits requests of keys that fail open. Their usage
is merged into Redis once, when it answers again (a ``done`` marker per request).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from redis.asyncio import Redis

from tollhouse.admission import refusals
from tollhouse.admission.functions import Committed, Held, MeterFunctions, Missing, Settle
from tollhouse.admission.memory import MemoryMeter, Reservation
from tollhouse.admission.meter import (
    ALWAYS,
    Counter,
    CounterId,
    Kind,
    MeterUnreachable,
    Refusal,
    Spent,
    from_micros,
    micros,
)
from tollhouse.admission.rebuild import LedgerTotals
from tollhouse.errors import StoreUnavailable
from tollhouse.ops.metrics import Metrics

log = logging.getLogger("tollhouse.admission")

_REBUILDS = 3  # a reservation meeting missing counters this often in a row gives up


@dataclass(slots=True)
class SharedReservation:
    """A reservation named by the request id; held in Redis unless ``local`` is set."""

    id: str
    ids: tuple[CounterId, ...]
    amounts: tuple[int, ...]
    generations: tuple[str, ...]  # of each counter when reserved ("": not held in Redis)
    local: Reservation | None = None  # admitted by the local meter while Redis was away

    @property
    def in_redis(self) -> bool:
        return self.local is None and bool(self.ids)


class RedisMeter:
    """The ``Meter`` of a scaled-out deployment: every replica reserves in one Redis."""

    def __init__(
        self,
        client: Redis,
        ledger: LedgerTotals,
        *,
        ttl_s: float,
        metrics: Metrics | None = None,
        settle_batch: int = 256,
        clock: Callable[[], int] = time.monotonic_ns,  # expiry of local admissions
    ) -> None:
        self.functions = MeterFunctions(client, ttl_s=ttl_s, settle_batch=settle_batch)
        self.local = MemoryMeter(ledger, ttl_s, clock)
        self.counters: dict[CounterId, Counter] = self.local.counters
        self._ledger = ledger
        self._metrics = metrics

    @property
    def pending(self) -> int:
        return self.functions.pending

    async def start(self) -> None:
        await self.functions.start()

    async def stop(self, timeout_s: float) -> None:
        await self.functions.stop(timeout_s)

    async def flush(self) -> None:
        await self.functions.flush()

    async def track(self, new: Mapping[CounterId, Counter], now: datetime) -> None:
        # The local view starts from the ledger too: it decides alone if Redis is away.
        await self.local.track(new, now)

    # -- the request path ---------------------------------------------------------------

    async def reserve(
        self,
        rid: str,
        ids: tuple[CounterId, ...],
        amounts: tuple[int, ...],
        now_us: int,
        fail_open: bool = False,
    ) -> SharedReservation | Refusal:
        if not ids:
            # Nothing to check, so no round trip: a key without limits needs no Redis.
            return SharedReservation(rid, ids, amounts, ())
        counters = self.counters
        pairs = []
        for counter_id in ids:
            counter = counters[counter_id]
            if not counter.start_us <= now_us < counter.end_us:
                counter.roll(from_micros(now_us))
            pairs.append((counter_id, counter))
        for _ in range(_REBUILDS):
            try:
                outcome = await self.functions.reserve(rid, pairs, amounts, now_us)
                if isinstance(outcome, Missing):
                    await self._rebuild(outcome, now_us)
                    continue
            except MeterUnreachable as exc:
                if fail_open:
                    return await self._fallback(rid, ids, amounts, now_us, exc)
                raise
            if isinstance(outcome, Held):
                return SharedReservation(rid, ids, amounts, outcome.generations)
            return outcome
        raise StoreUnavailable(refusals.NOT_REBUILT)

    async def _fallback(
        self,
        rid: str,
        ids: tuple[CounterId, ...],
        amounts: tuple[int, ...],
        now_us: int,
        error: MeterUnreachable,
    ) -> SharedReservation | Refusal:
        """Redis is away and the key fails open: admit against the local meter (the last
        values Redis reported plus what this replica admitted since)."""
        outcome = await self.local.reserve(rid, ids, amounts, now_us)
        if isinstance(outcome, Refusal):
            return outcome
        if self._metrics is not None:
            self._metrics.meter_fallback_admissions.inc()
        log.warning(
            "admitted on the local meter: Redis unreachable",
            extra={"request_id": rid, "error": str(error)},
        )
        return SharedReservation(rid, ids, amounts, ("",) * len(ids), local=outcome)

    def settle(
        self,
        held: SharedReservation,
        actual: Mapping[Kind, int],
        created: datetime,
        on_spent: Spent | None = None,
        uncovered: tuple[CounterId, ...] = (),
    ) -> None:
        if held.local is not None:
            self.local.settle(held.local, actual, created)
        ids = held.ids + uncovered if uncovered else held.ids
        if not ids:
            return
        created_us = micros(created)
        windows = tuple(self._window(counter_id, created_us) for counter_id in ids)
        amounts = tuple(actual.get(counter_id[0], 0) for counter_id in ids)
        generations = held.generations + ("",) * len(uncovered)
        spent = actual.get("budget", 0)
        on_committed = self._spent_hook(ids, spent, on_spent) if on_spent and spent else None
        item = Settle(
            held.id, ids, amounts, windows, generations, created_us, held.in_redis, on_committed
        )
        self.functions.settle(item)

    def release(self, held: SharedReservation) -> None:
        if held.local is not None:
            self.local.release(held.local)  # nothing consumed: nothing to merge
        elif held.ids:
            now_us = time.time_ns() // 1000
            zeros = (0,) * len(held.ids)
            windows = ((0, 0),) * len(held.ids)
            item = Settle(held.id, held.ids, zeros, windows, held.generations, now_us, True)
            self.functions.settle(item)

    def _window(self, counter_id: CounterId, created_us: int) -> tuple[int, int]:
        """The window a settle at ``created_us`` commits in, by the local view."""
        counter = self.counters.get(counter_id)
        if counter is None or counter.window is None:
            return (0, 0)
        if counter.start_us <= created_us < counter.end_us:
            return (counter.start_us, counter.end_us)
        window = counter.window.at(from_micros(created_us))
        return (micros(window.start), micros(window.end))

    def _spent_hook(self, ids: tuple[CounterId, ...], spent: int, on_spent: Spent) -> Committed:
        counters = self.counters

        def on_committed(after: list[int | None]) -> None:
            for counter_id, value in zip(ids, after, strict=True):
                counter = counters.get(counter_id)
                if counter_id[0] == "budget" and value is not None and counter is not None:
                    on_spent(counter, value - spent, value)

        return on_committed

    # -- expiry, rebuilding and reading -------------------------------------------------

    async def sweep(self, now: datetime) -> int:
        # What was admitted on the local meter while Redis was away expires like the rest;
        # first, so that Redis being away still does not keep those reservations held.
        local = await self.local.sweep(now)
        try:
            return local + await self.functions.sweep(micros(now) // 1000)
        except MeterUnreachable:  # Redis's own expire when it is back: next second's sweep
            return local

    async def refresh(self, ids: list[CounterId], now: datetime) -> None:
        pairs = [(i, self.counters[i]) for i in ids if i in self.counters]
        missing = await self.functions.read(pairs)
        if missing:
            await self._rebuild(Missing(tuple(missing)), micros(now))
            await self.functions.read(pairs)

    async def publish_limits(self, ids: list[CounterId]) -> None:
        await self.functions.limits([(i, self.counters[i]) for i in ids if i in self.counters])

    async def reset(self, ids: list[CounterId], now: datetime) -> None:
        await self.local.reset(ids, now)
        for counter_id in ids:
            counter = self.counters.get(counter_id)
            if counter is not None and counter.window is not None:
                await self.functions.reset([counter_id], (counter.start_us, counter.end_us))

    async def _rebuild(self, missing: Missing, now_us: int) -> None:
        """Build the counters Redis lacks from the ledger (first use, or Redis lost its
        data). The total covers every record of the window; the records of the last few
        seconds are named, so that their settles, which may still be on their way, are
        counted once (docs/deployment.md, *Rebuild*)."""
        known = [(i, self.counters[i]) for i in missing.ids if i in self.counters]
        cut_us, rebuilt = await self._ledger.rebuild_with_recent([c for _, c in known], now_us)
        for (counter_id, _), state in zip(known, rebuilt, strict=True):
            window = state.window
            if window is not None:
                span = (micros(window.start), micros(window.end))
            else:
                # A prepaid account's usage lives as long as the account: no window end
                # to expire it (requests in flight are rebuilt at 0 whenever lost).
                span = ALWAYS if counter_id[0] == "credits" else (0, 0)
            await self.functions.load(counter_id, state.committed, cut_us, span, state.recent)
