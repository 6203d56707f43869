"""The in-process bus (the embedded default): the contract of ``backends.py`` kept in
this process's memory, with the same partitions, groups, leases and redelivery as the
shared backends, so that code tested on it behaves the same on Redis or Kafka.

Events are kept as the bytes a shared backend would carry (encoded and checked on
publish, decoded and checked on fetch): nothing a handler receives is an object a
producer still holds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tollhouse.bus import events
from tollhouse.bus.backends import Message, partition_of, shares


@dataclass(slots=True)
class _Partition:
    first: int = 0  # the offset of entries[0] (older ones were trimmed)
    entries: list[tuple[str, bytes]] = field(default_factory=list)  # (key, raw)

    @property
    def end(self) -> int:
        return self.first + len(self.entries)


@dataclass(slots=True)
class _Group:
    committed: dict[int, int]  # partition -> the next offset not yet done
    read: dict[int, int]  # partition -> the next offset to hand out
    seen: dict[str, float] = field(default_factory=dict)  # member -> last fetch
    owner: dict[int, str] = field(default_factory=dict)


class MemoryBus:
    name = "memory"

    def __init__(self, partitions: int = 8, max_len: int = 100_000, lease_s: float = 10.0) -> None:
        self.partitions = partitions
        self.invalid = 0
        self._max_len = max_len
        self._lease_s = lease_s
        self._topics: dict[str, list[_Partition]] = {}
        self._groups: dict[tuple[str, str], _Group] = {}
        self._published = asyncio.Condition()

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def _topic(self, topic: str) -> list[_Partition]:
        found = self._topics.get(topic)
        if found is None:
            if topic not in events.TOPICS:
                events.validate(topic, {})  # InvalidEvent naming the topics
            found = self._topics[topic] = [_Partition() for _ in range(self.partitions)]
        return found

    async def publish(self, topic: str, event: Mapping[str, Any]) -> str:
        raw = events.encode(topic, event)
        key = str(event["session_id"])
        number = partition_of(key, self.partitions)
        partition = self._topic(topic)[number]
        partition.entries.append((key, raw))
        position = partition.end - 1
        if len(partition.entries) > self._max_len:  # trimmed, as MAXLEN would
            drop = len(partition.entries) - self._max_len
            del partition.entries[:drop]
            partition.first += drop
        async with self._published:
            self._published.notify_all()
        return f"{number}-{position}"

    async def subscribe(
        self, topic: str, group: str, consumer: str, *, listener: bool = False
    ) -> MemorySubscription:
        partitions = self._topic(topic)
        state = self._groups.get((topic, group))
        if state is None:
            start = [p.end if listener else 0 for p in partitions]
            state = self._groups[(topic, group)] = _Group(
                committed=dict(enumerate(start)), read=dict(enumerate(start))
            )
        state.seen[consumer] = time.monotonic()
        return MemorySubscription(self, topic, group if listener else None, state, consumer)

    def inject(self, topic: str, key: str, raw: bytes) -> None:
        """Append bytes unchecked, as a foreign producer could (for the tests)."""
        self._topic(topic)[partition_of(key, self.partitions)].entries.append((key, raw))

    # -- for subscriptions --------------------------------------------------------------

    def _assign(self, topic: str, state: _Group) -> None:
        """Partitions to the live members; a partition that changes hands is read again
        from its last commit (what its owner fetched and did not commit comes back)."""
        now = time.monotonic()
        for member, last in list(state.seen.items()):
            if now - last > self._lease_s:
                del state.seen[member]
        owned = shares(list(state.seen), self.partitions) if state.seen else {}
        for member, numbers in owned.items():
            for number in numbers:
                if state.owner.get(number) != member:
                    state.owner[number] = member
                    state.read[number] = state.committed[number]
        for number in list(state.owner):
            if state.owner[number] not in owned:
                del state.owner[number]
                state.read[number] = state.committed[number]

    def _take(self, topic: str, state: _Group, consumer: str, max_count: int) -> list[Message]:
        self._assign(topic, state)
        taken: list[Message] = []
        for number, partition in enumerate(self._topics[topic]):
            if state.owner.get(number) != consumer:
                continue
            start = max(state.read[number], partition.first)
            for offset in range(start, partition.end):
                if len(taken) >= max_count:
                    break
                key, raw = partition.entries[offset - partition.first]
                state.read[number] = offset + 1
                try:
                    event = events.decode(topic, raw)
                except events.InvalidEvent:
                    self.invalid += 1
                    state.committed[number] = max(state.committed[number], offset + 1)
                    continue
                taken.append(Message(topic, number, str(offset), key, event))
        return taken


class MemorySubscription:
    def __init__(
        self, bus: MemoryBus, topic: str, own_group: str | None, state: _Group, consumer: str
    ) -> None:
        self._bus = bus
        self._topic = topic
        self._own_group = own_group  # a listener's group, removed when it closes
        self._state = state
        self._consumer = consumer
        self._closed = False

    async def fetch(self, max_count: int = 100, timeout_s: float = 1.0) -> list[Message]:
        if self._closed:
            raise RuntimeError("this subscription is closed")
        deadline = time.monotonic() + timeout_s
        while True:
            self._state.seen[self._consumer] = time.monotonic()
            taken = self._bus._take(self._topic, self._state, self._consumer, max_count)
            left = deadline - time.monotonic()
            if taken or left <= 0:
                return taken
            async with self._bus._published:
                try:
                    async with asyncio.timeout(min(left, self._bus._lease_s / 2)):
                        await self._bus._published.wait()
                except TimeoutError:
                    pass

    async def commit(self, messages: Sequence[Message]) -> None:
        state = self._state
        for message in messages:
            if state.owner.get(message.partition) != self._consumer:
                continue  # the partition moved on: its new owner hands it out again
            done = int(message.position) + 1
            state.committed[message.partition] = max(state.committed[message.partition], done)

    async def close(self) -> None:
        self._closed = True
        self._state.seen.pop(self._consumer, None)
        self._bus._assign(self._topic, self._state)
        if self._own_group is not None:
            self._bus._groups.pop((self._topic, self._own_group), None)
