"""Both meters behind one synchronous face, for the contract suite (a plain module:
import, don't conftest).

A ``Harness`` owns an event loop, a real ledger (SQLite in ``tmp_path``, migrated, with
the real usage recorder), and one meter of the strategy asked for: ``MemoryMeter``, or
``RedisMeter`` on the session's real ``redis-server``. Time is the harness's: every
operation runs at ``harness.now``, which only moves when a test says so — in whole
milliseconds, Redis's resolution for expiry — and the memory meter's expiry clock
follows it. Synchronous, so that Hypothesis state machines drive it step by step.

Reads go through ``counter(id)``: every queued settle applied, then the counter as the
meter's store holds it (Redis: read back), rolled to ``now``.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Coroutine, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

from redis.asyncio import Redis

from tollhouse.admission import Counter, CounterId, LedgerTotals, MemoryMeter, Refusal
from tollhouse.admission.meter import Kind, Spent, micros
from tollhouse.admission.redis import RedisMeter
from tollhouse.admission.snapshot import Scope, WindowSpec
from tollhouse.config import load_settings
from tollhouse.db import create_engine
from tollhouse.db.schema import upgrade
from tollhouse.ledger import UsageRecord, UsageRecorder
from tollhouse.ops.metrics import Metrics
from tollhouse.windows import parse_duration

T = TypeVar("T")
T0 = datetime(2025, 3, 30, 0, 59, 50, tzinfo=UTC)
TTL_S = 30.0
STRATEGIES = ["memory", "redis"]


def scope(kind: str, ident: str) -> Scope:
    return Scope(kind, ident, f"{kind}-{ident}", None, None)  # type: ignore[arg-type]


def window(seconds: int | None) -> WindowSpec | None:
    return None if seconds is None else WindowSpec(parse_duration(f"{seconds}s"), T0)


def counter(
    kind: Kind, limit: int, seconds: int | None = 60, owner: Scope | None = None
) -> Counter:
    return Counter(kind, limit, window(seconds), owner or scope("key", "k"))


class Harness:
    def __init__(self, strategy: str, workdir: Path, redis_url: str | None) -> None:
        self.strategy = strategy
        self.loop = asyncio.new_event_loop()
        self.now_us = micros(T0)
        self._rids = itertools.count()
        url = f"sqlite+aiosqlite:///{workdir / 'ledger.db'}"
        settings = load_settings(env={"TOLLHOUSE_CONFIG": "/dev/null"}, database_url=url)
        self.engine = create_engine(settings)
        self.run(upgrade(self.engine))
        self.recorder = UsageRecorder(self.engine, Metrics(), flush_interval_ms=3_600_000)
        self.run(self.recorder.start())
        self.ledger = LedgerTotals(self.engine, self.recorder)
        self.client: Redis | None = None
        if strategy == "redis":
            assert redis_url is not None
            self.client = self.run(self._connect(redis_url))
        self.meter: Any = None
        self.fresh()

    async def _connect(self, url: str) -> Redis:
        return Redis.from_url(url)

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    # -- the meter ------------------------------------------------------------------------

    def fresh(self) -> None:
        """A new meter on an empty store, time back at T0 (the ledger is kept)."""
        self.stop_meter()
        self.now_us = micros(T0)
        if self.client is None:
            self.meter = MemoryMeter(self.ledger, TTL_S, clock=lambda: self.now_us * 1000)
        else:
            self.run(self.client.flushall())
            self.meter = RedisMeter(self.client, self.ledger, ttl_s=TTL_S)
        self.run(self.meter.start())

    def lose_counters(self) -> None:
        """The store forgets every counter: memory, a restart (a new meter); Redis, its
        data lost (replicas keep their local view, as they would)."""
        if self.client is None:
            self.meter = MemoryMeter(self.ledger, TTL_S, clock=lambda: self.now_us * 1000)
        else:
            self.run(self.client.flushall())

    def stop_meter(self) -> None:
        if self.meter is not None:
            self.run(self.meter.stop(timeout_s=5))

    def close(self) -> None:
        self.stop_meter()
        self.run(self.recorder.stop(timeout_s=5))
        if self.client is not None:
            self.run(self.client.aclose())
        self.run(self.engine.dispose())
        self.loop.close()

    # -- time -------------------------------------------------------------------------------

    @property
    def now(self) -> datetime:
        return T0 + timedelta(microseconds=self.now_us - micros(T0))

    def advance(self, seconds: float) -> None:
        self.now_us += round(seconds * 1000) * 1000  # whole milliseconds

    # -- operations, at ``now`` -------------------------------------------------------------

    def track(self, counters: Mapping[CounterId, Counter]) -> None:
        self.run(self.meter.track(counters, self.now))

    def reserve(self, *claims: tuple[CounterId, int], rid: str | None = None) -> Any:
        """Reserve ``(counter id, amount)`` claims; the reservation or a ``Refusal``."""
        rid = rid or f"req_{next(self._rids):06d}"
        ids = tuple(c[0] for c in claims)
        amounts = tuple(c[1] for c in claims)
        return self.run(self.meter.reserve(rid, ids, amounts, self.now_us))

    def held(self, *claims: tuple[CounterId, int]) -> Any:
        outcome = self.reserve(*claims)
        assert not isinstance(outcome, Refusal), outcome
        return outcome

    def settle(
        self,
        held: Any,
        actual: Mapping[Kind, int],
        *,
        on_spent: Spent | None = None,
        uncovered: tuple[CounterId, ...] = (),
    ) -> None:
        self.meter.settle(held, actual, self.now, on_spent=on_spent, uncovered=uncovered)
        self.run(self.meter.flush())

    def release(self, held: Any) -> None:
        self.meter.release(held)
        self.run(self.meter.flush())

    def sweep(self) -> int:
        return int(self.run(self.meter.sweep(self.now)))

    def reset(self, *ids: CounterId) -> None:
        self.run(self.meter.reset(list(ids), self.now))

    # -- what the store holds -----------------------------------------------------------------

    def counter(self, counter_id: CounterId) -> Counter:
        return self.counters(counter_id)[counter_id]

    def counters(self, *ids: CounterId) -> dict[CounterId, Counter]:
        """``ids`` (every known counter when none) as the store holds them now."""
        self.run(self.meter.flush())
        wanted = list(ids or self.meter.counters)
        self.run(self.meter.refresh(wanted, self.now))
        out = {}
        for counter_id in wanted:
            found = self.meter.counters[counter_id]
            found.roll(self.now)
            out[counter_id] = found
        return out

    def open_ids(self) -> set[str]:
        """Reservations the store holds open (neither settled, released nor expired)."""
        if self.client is None:
            return set(self.meter.open)
        members = self.run(self.client.zrange("{tollhouse}:exp", 0, -1))
        return {m.decode() for m in members}

    # -- the ledger ---------------------------------------------------------------------------

    def record(self, rid: str, owner: Scope, *, cost: str = "0", tokens: int = 0) -> None:
        """A usage record of ``owner`` at ``now``, left buffered in the recorder."""
        ids = {f"{owner.kind}_id": owner.id}
        self.recorder.add(
            UsageRecord(
                id=rid,
                created_at=self.now,
                endpoint="chat",
                provider="openai",
                model="gpt-4o-mini",
                prompt_tokens=tokens,
                completion_tokens=0,
                cached_tokens=0,
                cost=Decimal(cost),
                priced=True,
                latency_ms=1.0,
                status="success",
                http_status=200,
                streamed=False,
                **ids,
            )
        )
