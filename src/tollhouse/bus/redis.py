"""The bus on Redis Streams (``redis_url``): the contract of ``backends.py`` with one
stream per partition and one consumer group per group of workers.

**Partitions and owners.** An event is appended (``XADD … MAXLEN ~ bus_max_len``) to the
stream of its session's partition. A group's members announce themselves in a sorted
set (scored by when they stop counting as alive) and each works out its share of the
partitions (``backends.shares``: round robin over the live members' names, the same on
every member). A member reads a partition only while it holds that partition's lease
(``SET NX PX lease``, renewed on every fetch), so a session's events are handled by one
member at a time, in order — which a single stream read by a group, where any member
takes the next entry, would not give.

**Redelivery.** What a member read and did not acknowledge stays in the group's pending
list under its name. Whoever takes the partition next — the same member after a
restart, or another once the lease expired or was released — first claims every
pending entry of the stream (``XAUTOCLAIM`` from ``0-0``, idle 0) and hands those out
before reading anything new (``XREADGROUP … >``). ``commit`` is ``XACK``.

An entry that does not decode or fails its schema is acknowledged at once, counted and
skipped, so it never blocks its partition.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any

import redis.asyncio as redis
from redis.exceptions import ResponseError

from tollhouse.bus import events
from tollhouse.bus.backends import Message, partition_of, shares

# Renew a lease only if it is still ours; give it up only if it is still ours.
_RENEW = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then"
    " return redis.call('pexpire', KEYS[1], ARGV[2]) end return 0"
)
_RELEASE = (
    "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
)
_CLAIM_BATCH = 500


class RedisBus:
    name = "redis"

    def __init__(
        self,
        url: str,
        *,
        namespace: str = "",
        partitions: int = 8,
        max_len: int = 100_000,
        lease_s: float = 10.0,
    ) -> None:
        self.partitions = partitions
        self.invalid = 0
        self._url = url
        self._prefix = f"tollhouse:{namespace}:" if namespace else "tollhouse:"
        self._max_len = max_len
        self.lease_s = lease_s
        self._client: redis.Redis | None = None
        self._groups: set[tuple[str, str]] = set()
        self._subscriptions: list[RedisSubscription] = []

    @property
    def client(self) -> redis.Redis:
        if self._client is None:
            raise RuntimeError("the bus has not started")
        return self._client

    async def start(self) -> None:
        # No socket timeout: a blocking read waits as long as it asked to.
        self._client = redis.Redis.from_url(self._url, decode_responses=False)
        await self._client.ping()

    async def close(self) -> None:
        for subscription in list(self._subscriptions):
            await subscription.close()
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def stream(self, topic: str, partition: int) -> str:
        return f"{self._prefix}bus:{topic}:{partition}"

    def key(self, kind: str, *parts: object) -> str:
        return f"{self._prefix}bus-{kind}:" + ":".join(str(p) for p in parts)

    async def publish(self, topic: str, event: Mapping[str, Any]) -> str:
        raw = events.encode(topic, event)
        return await self._append(topic, str(event["session_id"]), raw)

    async def inject(self, topic: str, key: str, raw: bytes) -> None:
        """Append bytes unchecked, as a foreign producer could (for the tests)."""
        await self._append(topic, key, raw)

    async def _append(self, topic: str, key: str, raw: bytes) -> str:
        number = partition_of(key, self.partitions)
        entry: Any = await self.client.xadd(
            self.stream(topic, number),
            {b"k": key.encode(), b"v": raw},
            maxlen=self._max_len,
            approximate=True,
        )
        return f"{number}-{entry.decode()}"

    async def subscribe(
        self, topic: str, group: str, consumer: str, *, listener: bool = False
    ) -> RedisSubscription:
        if topic not in events.TOPICS:
            events.validate(topic, {})  # InvalidEvent naming the topics
        if (topic, group) not in self._groups:
            for number in range(self.partitions):
                try:  # a new group misses nothing kept (a listener: nothing from now on)
                    await self.client.xgroup_create(
                        self.stream(topic, number),
                        group,
                        id="$" if listener else "0",
                        mkstream=True,
                    )
                except ResponseError as exc:
                    if "BUSYGROUP" not in str(exc):
                        raise
            self._groups.add((topic, group))
        subscription = RedisSubscription(self, topic, group, consumer, listener)
        await subscription.join()
        self._subscriptions.append(subscription)
        return subscription

    def _forget(self, subscription: RedisSubscription) -> None:
        if subscription in self._subscriptions:
            self._subscriptions.remove(subscription)


class RedisSubscription:
    def __init__(
        self, bus: RedisBus, topic: str, group: str, consumer: str, listener: bool = False
    ) -> None:
        self._bus = bus
        self._listener = listener
        self._topic = topic
        self._group = group
        self._consumer = consumer
        self._members = bus.key("members", topic, group)
        self._owned: set[int] = set()
        self._backlog: dict[int, list[tuple[bytes, dict[bytes, bytes]]]] = {}
        self._lease_ms = max(1, int(bus.lease_s * 1000))
        self._skipped: list[tuple[int, str]] = []  # invalid entries, acknowledged next
        self._closed = False
        self._balanced_at = -float("inf")  # monotonic time of the last ``_balance``

    async def join(self) -> None:
        """Counted among the group's members from now (before its first fetch), so that
        members joining together share the partitions from the start."""
        now_ms = int(time.time() * 1000)
        await self._bus.client.zadd(self._members, {self._consumer: now_ms + self._lease_ms})

    def _lease(self, number: int) -> str:
        return self._bus.key("lease", self._topic, self._group, number)

    async def fetch(self, max_count: int = 100, timeout_s: float = 1.0) -> list[Message]:
        if self._closed:
            raise RuntimeError("this subscription is closed")
        deadline = time.monotonic() + timeout_s
        while True:
            # Membership and leases are kept up every quarter lease, not on every fetch:
            # a busy member's fetches then cost one read each, not one per partition.
            if not self._owned or time.monotonic() - self._balanced_at >= self._bus.lease_s / 4:
                await self._balance()
                self._balanced_at = time.monotonic()
            taken = self._from_backlog(max_count)
            left = deadline - time.monotonic()
            if len(taken) < max_count and self._owned:
                wait = 0.0 if taken else min(max(left, 0.0), self._bus.lease_s / 3)
                await self._read(max_count - len(taken), wait)
                taken += self._from_backlog(max_count - len(taken))
            if self._skipped:
                await self.commit([])  # skipped for good: never handed out again
            if taken or time.monotonic() >= deadline:
                return taken
            if not self._owned:
                await asyncio.sleep(min(deadline - time.monotonic(), self._bus.lease_s / 3, 0.2))

    async def _balance(self) -> None:
        """Stay alive in the group, keep the partitions of this member's share, let go
        of the others, and take over free ones (claiming what their owner left)."""
        client, now_ms = self._bus.client, int(time.time() * 1000)
        async with client.pipeline(transaction=False) as pipe:
            pipe.zadd(self._members, {self._consumer: now_ms + self._lease_ms})
            pipe.zremrangebyscore(self._members, "-inf", now_ms)
            pipe.zrange(self._members, 0, -1)
            pipe.pexpire(self._members, self._lease_ms * 10)
            _, _, live, _ = await pipe.execute()
        names = [m.decode() for m in live] or [self._consumer]
        mine = set(shares(names, self._bus.partitions).get(self._consumer, []))
        for number in sorted(self._owned - mine):
            await client.eval(_RELEASE, 1, self._lease(number), self._consumer)
            self._owned.discard(number)
            self._backlog.pop(number, None)  # still pending under this name: claimed next
        for number in sorted(self._owned):
            kept = await client.eval(_RENEW, 1, self._lease(number), self._consumer, self._lease_ms)
            if not kept:  # lost it (a pause longer than the lease): the next owner claims
                self._owned.discard(number)
                self._backlog.pop(number, None)
        for number in sorted(mine - self._owned):
            took = await client.set(self._lease(number), self._consumer, nx=True, px=self._lease_ms)
            if took:
                self._owned.add(number)
                self._backlog[number] = await self._claim(number)

    async def _claim(self, number: int) -> list[tuple[bytes, dict[bytes, bytes]]]:
        """Every pending entry of the partition's stream, now this member's, oldest first."""
        stream, start = self._bus.stream(self._topic, number), "0-0"
        claimed: list[tuple[bytes, dict[bytes, bytes]]] = []
        while True:
            answer: Any = await self._bus.client.xautoclaim(
                stream, self._group, self._consumer, 0, start_id=start, count=_CLAIM_BATCH
            )
            following, entries = answer[0], answer[1]
            claimed += [(entry, fields) for entry, fields in entries if fields]
            if following in (b"0-0", "0-0"):
                return sorted(claimed, key=lambda e: _order(e[0]))
            start = following

    def _from_backlog(self, max_count: int) -> list[Message]:
        taken: list[Message] = []
        for number in sorted(self._backlog):
            pending = self._backlog[number]
            while pending and len(taken) < max_count:
                entry, fields = pending.pop(0)
                message = self._message(number, entry, fields)
                if message is not None:
                    taken.append(message)
        return taken

    async def _read(self, count: int, wait_s: float) -> None:
        """New entries of the owned partitions into the backlog (a read brings up to
        ``count`` per stream: what this fetch cannot hand out waits there, in order)."""
        streams: dict[Any, Any] = {self._bus.stream(self._topic, n): ">" for n in self._owned}
        block = int(wait_s * 1000) if wait_s > 0 else None
        answer: Any = await self._bus.client.xreadgroup(
            self._group, self._consumer, streams, count=count, block=block
        )
        for stream, entries in answer or []:
            number = int(stream.decode().rsplit(":", 1)[1])
            if number in self._owned:
                self._backlog.setdefault(number, []).extend(entries)

    def _message(self, number: int, entry: bytes, fields: dict[bytes, bytes]) -> Message | None:
        try:
            event = events.decode(self._topic, fields.get(b"v", b""))
        except events.InvalidEvent:
            self._bus.invalid += 1
            self._skipped.append((number, entry.decode()))
            return None
        key = fields.get(b"k", b"").decode("utf-8", "replace")
        return Message(self._topic, number, entry.decode(), key, event)

    async def commit(self, messages: Sequence[Message]) -> None:
        by_stream: dict[str, list[str]] = {}
        for number, entry in self._skipped:
            by_stream.setdefault(self._bus.stream(self._topic, number), []).append(entry)
        self._skipped.clear()
        for message in messages:
            stream = self._bus.stream(self._topic, message.partition)
            by_stream.setdefault(stream, []).append(message.position)
        if not by_stream:
            return
        async with self._bus.client.pipeline(transaction=False) as pipe:
            for stream, ids in by_stream.items():
                pipe.xack(stream, self._group, *ids)
            await pipe.execute()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self.commit([])  # the invalid entries it skipped are done
            for number in sorted(self._owned):
                await self._bus.client.eval(_RELEASE, 1, self._lease(number), self._consumer)
            await self._bus.client.zrem(self._members, self._consumer)
            if self._listener:  # its own group: nobody else will read it
                for number in range(self._bus.partitions):
                    stream = self._bus.stream(self._topic, number)
                    await self._bus.client.xgroup_destroy(stream, self._group)
                self._bus._groups.discard((self._topic, self._group))
        finally:
            self._owned.clear()
            self._bus._forget(self)


def _order(entry: bytes) -> tuple[int, int]:
    millis, _, sequence = entry.decode().partition("-")
    return int(millis), int(sequence or 0)
