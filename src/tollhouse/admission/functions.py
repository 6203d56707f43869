"""The shared meter: the same counters as ``meter.py``, kept in Redis for every replica.

Each operation is one Redis function call (``meter.lua``), atomic on the server: a
request's check-and-reserve across all its counters, its settle, a counter's rebuild
from the ledger, the sweep of expired reservations. The local ``MemoryMeter`` of each
replica stays as a mirror: the values the last call returned, which the response
headers, refusal messages and admin views read.

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

from tollhouse.background import BatchQueue
from tollhouse.governance.meter import (
    Counter,
    CounterKey,
    Kind,
    MeterUnreachable,
    Missing,
    SharedReservation,
)

log = logging.getLogger("tollhouse.governance")

PREFIX = "{tollhouse}:"  # one hash tag: every key of a request on one cluster slot
_LIBRARY = resources.files("tollhouse.governance").joinpath("meter.lua").read_text()
_SAFETY_TTL_MS = 86_400_000
_ATTEMPTS = 3  # orphaned reservation hashes vanish after a day regardless


def redis_key(key: CounterKey) -> str:
    return f"{PREFIX}c:{key[0]}:{key[1]}"


# Called with each counter's committed value after a settle (None: not committed to).
Committed = Callable[[list[int | None]], None]


@dataclass(slots=True)
class _Settle:
    reservation: SharedReservation
    actual: tuple[int, ...]
    windows: tuple[tuple[int, int], ...]
    created_us: int
    on_committed: Committed | None = None


class RedisMeter:
    def __init__(self, client: Redis, *, ttl_s: float, settle_batch: int = 256) -> None:
        self.client = client
        self._ttl_ms = int(ttl_s * 1000)
        self._queue: BatchQueue[_Settle] = BatchQueue(
            self._send,
            name="tollhouse-settler",
            what="settles",
            batch=settle_batch,
            retry=(RedisError, OSError),  # kept and sent again: each settle is idempotent
            max_delay_s=2.0,
        )

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        await self.install()
        await self._queue.start()

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Send every queued settle (bounded by ``timeout_s``), then stop."""
        await self._queue.stop(timeout_s)

    async def install(self) -> None:
        await self.client.function_load(_LIBRARY, replace=True)

    @property
    def pending(self) -> int:
        return self._queue.pending

    # -- the request path ---------------------------------------------------------------

    async def reserve(
        self,
        rid: str,
        counters: list[tuple[CounterKey, Counter]],
        amounts: tuple[int, ...],
        now_us: int,
    ) -> SharedReservation | Missing | tuple[int, Counter, int]:
        """Reserve every amount or none. Returns the reservation, the counters Redis
        lacks, or ``(index, counter, amount)`` of the first counter that refused. The
        mirror counters are updated with what Redis holds either way."""
        args: list[Any] = [len(counters), rid, now_us // 1000 + self._ttl_ms]
        args.append(self._ttl_ms + _SAFETY_TTL_MS)
        for (_, counter), amount in zip(counters, amounts, strict=True):
            args += (counter.limit, amount, counter.start_us, counter.end_us)
        keys = [redis_key(key) for key, _ in counters]
        reply = await self._call("tollhouse_reserve", keys, args)
        status = int(reply[0])
        if status == 2:
            return Missing(tuple(counters[int(i) - 1][0] for i in reply[1:]))
        values = reply[1:] if status == 0 else reply[2:]
        _mirror([c for _, c in counters], values)
        if status == 1:
            index = int(reply[1]) - 1
            return index, counters[index][1], amounts[index]
        generations = tuple(_text(values[i * 5 + 4]) for i in range(len(counters)))
        return SharedReservation(rid, tuple(k for k, _ in counters), amounts, generations)

    def settle(
        self,
        reservation: SharedReservation,
        actual: dict[Kind, int],
        windows: tuple[tuple[int, int], ...],
        created_us: int,
        on_committed: Committed | None = None,
    ) -> None:
        """Queue the settle; never blocks. ``on_committed`` hears, once it landed, what
        each counter holds after it."""
        amounts = tuple(actual.get(key[0], 0) for key in reservation.keys)
        self._queue.put(_Settle(reservation, amounts, windows, created_us, on_committed))

    # -- rebuilding and reading ---------------------------------------------------------

    async def load(
        self,
        key: CounterKey,
        committed: int,
        cut_us: int,
        window: tuple[int, int],
        counted: list[str],
    ) -> bool:
        generation = f"{time.time_ns():x}"
        args: list[Any] = [committed, cut_us, window[0], window[1]]
        args += [max(window[1] // 1000 - time.time_ns() // 1_000_000, 0) + 60_000, generation]
        args += counted
        return bool(await self._call("tollhouse_load", [redis_key(key)], args))

    async def read(self, counters: list[tuple[CounterKey, Counter]]) -> list[CounterKey]:
        """Refresh the mirror from Redis; returns the keys Redis lacks."""
        if not counters:
            return []
        reply = await self._call("tollhouse_read", [redis_key(k) for k, _ in counters], [])
        missing = []
        for i, (key, counter) in enumerate(counters):
            values = reply[i * 5 : i * 5 + 5]
            if values[0] is None:
                missing.append(key)
            else:
                _mirror([counter], values)
        return missing

    async def reset(self, keys: list[CounterKey], window: tuple[int, int]) -> None:
        if keys:
            await self._call("tollhouse_reset", [redis_key(k) for k in keys], list(window))

    async def sweep(self, now_ms: int, batch: int = 500) -> int:
        args = [now_ms, batch, self._ttl_ms + _SAFETY_TTL_MS]
        return int(await self._call("tollhouse_sweep", [f"{PREFIX}exp"], args))

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except (RedisError, OSError):
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
            except RedisConnectionError as exc:
                if attempt + 1 == _ATTEMPTS:
                    raise MeterUnreachable(str(exc)) from exc
                await asyncio.sleep(0.005 * 2**attempt)
            except (RedisError, OSError) as exc:
                raise MeterUnreachable(str(exc) or type(exc).__name__) from exc
        raise AssertionError("unreachable")

    async def _send(self, batch: list[_Settle]) -> None:
        async with self.client.pipeline(transaction=False) as pipe:
            for item in batch:
                res = item.reservation
                keys = [redis_key(k) for k in res.keys]
                args: list[Any] = [len(keys), res.id, item.created_us]
                args += (self._ttl_ms + _SAFETY_TTL_MS, "1" if res.reserved else "0")
                spans = zip(item.actual, item.windows, res.generations, strict=True)
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
                "settle refused by Redis",
                extra={"request_id": item.reservation.id, "error": str(reply)},
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
