"""The Redis functions of ``meter.lua``, one Python method each.

Each operation is one function call, atomic on the server: a request's check-and-reserve
across all its counters, its settle, a counter's rebuild from the ledger, the sweep of
expired reservations, a read, a reset. ``RedisMeter`` (``redis.py``) builds the meter
strategy on these; this module knows the wire format and nothing of admission.

Settles leave the request path: ``settle`` queues them and a background task sends them
in pipelined batches, retrying after errors (each settle is idempotent in Redis). Until
a settle lands, its reservation still holds capacity: late, never early.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError

from tollhouse.admission.meter import Counter, CounterId, MeterUnreachable, Refusal
from tollhouse.background import BatchQueue
from tollhouse.backoff import Backoff

log = logging.getLogger("tollhouse.admission")

PREFIX = "{tollhouse}:"  # one hash tag: every Redis key of a request on one cluster slot
_LIBRARY = resources.files("tollhouse.admission").joinpath("meter.lua").read_text()
_SAFETY_TTL_MS = 86_400_000
_COUNTED_TTL_MS = 86_400_000
_ATTEMPTS = 3  # orphaned reservation hashes vanish after a day regardless
_RETRY = Backoff(0.005, 0.02)  # 5 ms, then 10 ms: a dropped connection, not an outage
# A connection that broke: redis-py's errors, the socket's, and uvloop's RuntimeError for a
# write to a transport that closed under it ("the handler is closed") when Redis dies.
_DROPPED = (RedisConnectionError, OSError, RuntimeError)
_FAILED = (RedisError, *_DROPPED)


def redis_key(counter_id: CounterId) -> str:
    """The Redis key (a hash) holding one counter."""
    return f"{PREFIX}c:{counter_id[0]}:{counter_id[1]}"


# Called with each counter's committed value after a settle (None: not committed to).
Committed = Callable[[list[int | None]], None]


@dataclass(slots=True)
class Held:
    """What ``tollhouse_reserve`` answered: the reservation named ``rid``, and each
    counter's generation when it was taken (a settle skips counters rebuilt since)."""

    rid: str
    generations: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Missing:
    """Counters Redis does not have (first use, or Redis lost its data)."""

    ids: tuple[CounterId, ...]


@dataclass(slots=True)
class Settle:
    rid: str
    ids: tuple[CounterId, ...]
    actual: tuple[int, ...]  # per counter
    windows: tuple[tuple[int, int], ...]  # the window each amount is committed in
    generations: tuple[str, ...]  # "" for a counter the reservation did not hold
    created_us: int
    reserved: bool  # held in Redis (False: admitted without a Redis reservation)
    on_committed: Committed | None = None


class MeterFunctions:
    def __init__(self, client: Redis, *, ttl_s: float, settle_batch: int = 256) -> None:
        self.client = client
        self._ttl_ms = int(ttl_s * 1000)
        self._queue: BatchQueue[Settle] = BatchQueue(
            self._send,
            name="tollhouse-settler",
            what="settles",
            batch=settle_batch,
            retry=_FAILED,  # kept and sent again: each settle is idempotent
            max_delay_s=2.0,
        )

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        # The settler first: if Redis is away at start-up, settles still go out once it
        # answers (a batch meeting "Function not found" installs the library).
        await self._queue.start()
        await self.install()

    async def stop(self, timeout_s: float) -> None:
        """Send every queued settle (bounded by ``timeout_s``), then stop."""
        await self._queue.stop(timeout_s)

    async def flush(self) -> None:
        await self._queue.flush()

    async def install(self) -> None:
        await self.client.function_load(_LIBRARY, replace=True)

    @property
    def pending(self) -> int:
        return self._queue.pending

    # -- the request path ---------------------------------------------------------------

    async def reserve(
        self,
        rid: str,
        counters: list[tuple[CounterId, Counter]],
        amounts: tuple[int, ...],
        now_us: int,
    ) -> Held | Missing | Refusal:
        """Reserve every amount or none. Returns the reservation, the counters Redis
        lacks, or the first counter that refused. The counters are updated with what
        Redis holds either way."""
        args: list[Any] = [len(counters), rid, now_us // 1000 + self._ttl_ms]
        args.append(self._ttl_ms + _SAFETY_TTL_MS)
        for (_, counter), amount in zip(counters, amounts, strict=True):
            args += (limit_arg(counter), amount, counter.start_us, counter.end_us)
        keys = [redis_key(counter_id) for counter_id, _ in counters]
        reply = await self._call("tollhouse_reserve", keys, args)
        status = int(reply[0])
        if status == 2:
            return Missing(tuple(counters[int(i) - 1][0] for i in reply[1:]))
        values = reply[1:] if status == 0 else reply[2:]
        _mirror([c for _, c in counters], values)
        if status == 1:
            index = int(reply[1]) - 1
            return Refusal(counters[index][1], amounts[index])
        return Held(rid, tuple(_text(values[i * 5 + 4]) for i in range(len(counters))))

    def settle(self, settle: Settle) -> None:
        """Queue a settle; never blocks. Its ``on_committed`` hears, once it landed, what
        each counter holds after it."""
        self._queue.put(settle)

    # -- rebuilding and reading ---------------------------------------------------------

    async def load(
        self,
        counter_id: CounterId,
        committed: int,
        cut_us: int,
        window: tuple[int, int],
        counted: tuple[str, ...],
    ) -> bool:
        generation = f"{time.time_ns():x}"
        args: list[Any] = [committed, cut_us, window[0], window[1]]
        # The ids of records the total already counts matter only until their settles
        # have landed: until the window ends, and never more than a day (a prepaid
        # account's usage has no window end).
        until_end = max(window[1] // 1000 - time.time_ns() // 1_000_000, 0) + 60_000
        args += [min(until_end, _COUNTED_TTL_MS), generation]
        args += counted
        return bool(await self._call("tollhouse_load", [redis_key(counter_id)], args))

    async def read(self, counters: list[tuple[CounterId, Counter]]) -> list[CounterId]:
        """Update ``counters`` with what Redis holds; returns the ids Redis lacks."""
        if not counters:
            return []
        keys = [redis_key(counter_id) for counter_id, _ in counters]
        reply = await self._call("tollhouse_read", keys, [])
        missing = []
        for i, (counter_id, counter) in enumerate(counters):
            values = reply[i * 5 : i * 5 + 5]
            if values[0] is None:
                missing.append(counter_id)
            else:
                _mirror([counter], values)
        return missing

    async def limits(self, counters: list[tuple[CounterId, Counter]]) -> None:
        """Record each counter's limit at its revision, where newer than Redis has."""
        if counters:
            keys = [redis_key(counter_id) for counter_id, _ in counters]
            await self._call("tollhouse_limits", keys, [limit_arg(c) for _, c in counters])

    async def reset(self, ids: list[CounterId], window: tuple[int, int]) -> None:
        if ids:
            await self._call("tollhouse_reset", [redis_key(i) for i in ids], list(window))

    async def sweep(self, now_ms: int, batch: int = 500) -> int:
        args = [now_ms, batch, self._ttl_ms + _SAFETY_TTL_MS]
        return int(await self._call("tollhouse_sweep", [f"{PREFIX}exp"], args))

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except _FAILED:
            return False

    # -- internals ----------------------------------------------------------------------

    async def _call(self, name: str, keys: list[str], args: list[Any]) -> Any:
        """One function call; every one is idempotent, so a broken connection is retried
        (after a Redis restart the pool hands out connections the server closed)."""
        for attempt in range(_ATTEMPTS):
            try:
                try:
                    return await self.client.fcall(name, len(keys), *keys, *args)
                except ResponseError as exc:
                    if "Function not found" not in str(exc):
                        raise
                # Redis restarted empty: its functions went with its data.
                await self.install()
                return await self.client.fcall(name, len(keys), *keys, *args)
            except _DROPPED as exc:
                if attempt + 1 == _ATTEMPTS:
                    raise MeterUnreachable(str(exc) or type(exc).__name__) from exc
                await asyncio.sleep(_RETRY.delay(attempt))
            except RedisError as exc:
                raise MeterUnreachable(str(exc) or type(exc).__name__) from exc
        raise AssertionError("unreachable")

    async def _send(self, batch: list[Settle]) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            for item in batch:
                keys = [redis_key(i) for i in item.ids]
                args: list[Any] = [len(keys), item.rid, item.created_us]
                args += (self._ttl_ms + _SAFETY_TTL_MS, "1" if item.reserved else "0")
                spans = zip(item.actual, item.windows, item.generations, strict=True)
                for amount, (start, end), generation in spans:
                    args += (amount, start, end, generation)
                pipe.fcall("tollhouse_settle", len(keys), *keys, *args)
            replies = await pipe.execute(raise_on_error=False)
        for item, reply in zip(batch, replies, strict=True):
            if not isinstance(reply, ResponseError):
                if item.on_committed is not None and isinstance(reply, list) and reply[0]:
                    values = [int(v) if v not in (b"", "") else None for v in reply[1:]]
                    try:
                        item.on_committed(values)
                    except Exception:  # an alert must never hold settles back
                        log.exception("settle callback failed")
                continue
            if "Function not found" in str(reply):
                await self.install()
                raise RedisError("functions reloaded; the batch is sent again")
            # Not retried: the same arguments would fail the same way.
            log.error(
                "settle refused by Redis", extra={"request_id": item.rid, "error": str(reply)}
            )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _mirror(counters: list[Counter], values: list[Any]) -> None:
    """Copy (committed, reserved, start_us, end_us) per counter from a Redis reply."""
    for i, counter in enumerate(counters):
        committed, reserved, start, end = values[i * 5 : i * 5 + 4]
        counter.committed = int(committed)
        counter.reserved = int(reserved)
        start_us, end_us = int(start), int(end)
        if counter.window is not None and start_us != counter.start_us and end_us > start_us:
            counter.set_window_us(start_us, end_us)


def limit_arg(counter: Counter) -> int | str:
    """A counter's limit as ``tollhouse_reserve`` takes it: a prepaid account's with its
    revision (the newest wins in Redis), any other plain."""
    credit = counter.scope.credit
    if counter.kind == "credits" and credit is not None:
        return f"{counter.limit}@{credit.revision}"
    return counter.limit
