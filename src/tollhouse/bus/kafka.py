"""The bus on Kafka (``bus_kafka_bootstrap``), through aiokafka: the contract of
``backends.py`` with Kafka's own partitions, consumer groups and committed offsets.

**Topics and groups.** A topic is ``<namespace>.<topic>`` (``<topic>`` without a
namespace) with ``partitions`` partitions and ``replication`` replicas (1 suits a single
broker; give 3 on a cluster), created on ``start`` if missing (one that exists is used
as it is). A group is ``<namespace>.<group>`` likewise. An event's key is its
``session_id``, so Kafka's partitioner keeps a session in one partition. The producer
waits for every in-sync replica (``acks="all"``) and is not idempotent: some
Kafka-protocol brokers (Tansu) refuse ``InitProducerId``.

**Members.** ``subscribe`` starts one ``AIOKafkaConsumer`` in the group (the classic
protocol with eager rebalancing: every member gives up its partitions before the group
is shared again, so a partition never has two owners) and returns once the member has
its share. ``lease_s`` is the consumer's ``max_poll_interval_ms``: a member that stops
fetching for a lease leaves the group by itself and its partitions move. A member whose
process died sends nothing more: the broker drops it when its session times out
(``session_timeout_s``: ``lease_s`` unless given, at least ``MIN_SESSION_S``; five
heartbeats per session).

**Redelivery.** Offsets are committed by ``commit`` only, never automatically. A
partition that changes hands — its member closed (it leaves the group), died or stopped
fetching — is read by its next owner from its last committed offset, so what was fetched
and not committed comes back first. ``commit`` commits, per partition, the highest
offset of the batch plus one, for the partitions this member still owns (a partition
that moved is its new owner's to hand out again).

**A fetch** hands out what the consumer has, topped up to ``max_count`` from the same
partitions when the log is known to go on: past the broker's last high watermark, or
past what this process's own producer had acknowledged (``KafkaSubscription._read``).
It does not ask the broker where each log ends (a round trip on the way of every
event).

**Listeners** (``listener=True``) are in no group: a listener's partitions are its
alone and what it commits is never read again, so all the listeners of a bus share one
consumer with its partitions assigned, from the end of each at their start
(``_Listening``); ``commit`` does nothing for them.

**Invalid records** are counted in ``invalid`` and skipped, and committed with the
first commit that leaves nothing fetched before them waiting on their partition — at
once when there is nothing else to wait for — so a bad record never blocks its
partition. Kafka trims by retention (the topic's ``retention.ms`` / ``retention.bytes``),
not by a count: ``max_len`` is accepted for the common signature and not used.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from aiokafka import (  # type: ignore[import-untyped]
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRebalanceListener,
    TopicPartition,
)
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]
from aiokafka.errors import (  # type: ignore[import-untyped]
    CommitFailedError,
    IllegalStateError,
    TopicAlreadyExistsError,
    for_code,
)

from tollhouse.bus import events
from tollhouse.bus.backends import Message

# Tansu's group coordinator works in steps of one second (a JoinGroup waits half the
# session timeout for the other members, a follower's SyncGroup polls for the leader's
# assignment): with shorter sessions its members are evicted between two steps and the
# group never settles. Apache Kafka refuses sessions under 6 s by default
# (group.min.session.timeout.ms): pass session_timeout_s for such a broker.
MIN_SESSION_S = 2.0
# Tansu does not answer a fetch when a record arrives but at half its wait at the
# earliest: a short wait keeps delivery prompt (Apache Kafka answers at once either way).
FETCH_MAX_WAIT_MS = 100
# Records a listener holds and has not fetched, at most: the listeners' consumer waits.
LISTENER_KEPT = 10_000

log = logging.getLogger("tollhouse.bus")


class KafkaBus:
    name = "kafka"

    def __init__(
        self,
        bootstrap: str,
        *,
        namespace: str = "",
        partitions: int = 8,
        lease_s: float = 10.0,
        max_len: int = 100_000,
        session_timeout_s: float | None = None,
        replication: int = 1,
        fetch_wait_ms: int = FETCH_MAX_WAIT_MS,
    ) -> None:
        self.partitions = partitions
        self.replication = replication
        self.invalid = 0
        self.lease_s = lease_s
        self.session_timeout_s = max(MIN_SESSION_S, session_timeout_s or lease_s)
        self.fetch_wait_ms = fetch_wait_ms
        self._bootstrap = bootstrap
        self._prefix = f"{namespace}." if namespace else ""
        self._max_len = max_len  # Kafka trims by retention (see the module's docstring)
        self._producer: Any = None
        self._admin: Any = None
        self._started = False
        self._starting = asyncio.Lock()
        self._subscriptions: list[KafkaSubscription | KafkaListener] = []
        self._listening = _Listening(self)
        # Per partition, past the last event this producer had acknowledged.
        self._sent: dict[Any, int] = {}

    def topic(self, topic: str) -> str:
        """The Kafka topic of ``topic``."""
        return f"{self._prefix}{topic}"

    def group(self, group: str) -> str:
        """The Kafka consumer group of ``group``."""
        return f"{self._prefix}{group}"

    async def start(self) -> None:
        async with self._starting:
            if self._started:
                return
            admin = AIOKafkaAdminClient(bootstrap_servers=self._bootstrap, client_id="tollhouse")
            producer = AIOKafkaProducer(
                bootstrap_servers=self._bootstrap,
                client_id="tollhouse",
                acks="all",
                enable_idempotence=False,
            )
            try:
                await admin.start()
                await self._create_topics(admin)
                await producer.start()
            except BaseException:
                await admin.close()
                await producer.stop()
                raise
            self._admin, self._producer, self._started = admin, producer, True

    async def _create_topics(self, admin: Any) -> None:
        wanted = [
            NewTopic(self.topic(topic), self.partitions, self.replication)
            for topic in events.TOPICS
        ]
        response = await admin.create_topics(wanted)
        for name, code, *message in response.topic_errors:
            error = for_code(code)
            if code and error is not TopicAlreadyExistsError:
                raise error(f"creating topic {name}: {message[0] if message else ''}")

    async def close(self) -> None:
        subscriptions = list(self._subscriptions)
        await asyncio.gather(*(sub.close() for sub in subscriptions), return_exceptions=True)
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
        if self._admin is not None:
            await self._admin.close()
            self._admin = None
        self._started = False

    async def publish(self, topic: str, event: Mapping[str, Any]) -> str:
        raw = events.encode(topic, event)
        return await self._send(topic, str(event["session_id"]), raw)

    async def inject(self, topic: str, key: str, raw: bytes) -> None:
        """Send bytes unchecked, as a foreign producer could (for the tests)."""
        await self._send(topic, key, raw)

    async def _send(self, topic: str, key: str, raw: bytes) -> str:
        await self.start()
        sent = await self._producer.send_and_wait(self.topic(topic), raw, key=key.encode())
        tp = TopicPartition(sent.topic, sent.partition)
        self._sent[tp] = max(self._sent.get(tp, 0), sent.offset + 1)
        return f"{sent.partition}-{sent.offset}"

    async def subscribe(
        self, topic: str, group: str, consumer: str, *, listener: bool = False
    ) -> KafkaSubscription | KafkaListener:
        if topic not in events.TOPICS:
            events.validate(topic, {})  # InvalidEvent naming the topics
        await self.start()
        if listener:
            return await self._listening.follow(topic)
        session_ms = round(self.session_timeout_s * 1000)
        subscription = KafkaSubscription(
            self,
            topic,
            AIOKafkaConsumer(
                bootstrap_servers=self._bootstrap,
                group_id=self.group(group),
                client_id=consumer,  # the member id is "<client_id>-<uuid>"
                # No group_instance_id: a static member does not leave on close, and
                # its partitions would wait for its session to expire.
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                session_timeout_ms=session_ms,
                heartbeat_interval_ms=max(100, session_ms // 5),
                rebalance_timeout_ms=session_ms,
                max_poll_interval_ms=max(1, round(self.lease_s * 1000)),
                fetch_max_wait_ms=self.fetch_wait_ms,
            ),
        )
        self._subscriptions.append(subscription)
        try:
            await subscription._join(timeout_s=10 * self.session_timeout_s)
        except BaseException:
            await subscription.close()
            raise
        return subscription


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, subscription: KafkaSubscription) -> None:
        self._subscription = subscription
        self.joined = asyncio.Event()

    async def on_partitions_revoked(self, revoked: Any) -> None:
        self._subscription._forget(revoked)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self._subscription._forget(assigned)  # read again from the last commit
        self.joined.set()


class KafkaSubscription:
    def __init__(self, bus: KafkaBus, topic: str, consumer: Any) -> None:
        self._bus = bus
        self._topic = topic
        self._consumer = consumer
        self._listener = _Listener(self)
        self._closed = False
        # Per partition, since it was assigned: the valid offsets handed out and not
        # committed yet, and the offset after the last record fetched.
        self._pending: dict[int, set[int]] = {}
        self._fetched: dict[int, int] = {}

    async def _join(self, timeout_s: float) -> None:
        self._consumer.subscribe([self._bus.topic(self._topic)], listener=self._listener)
        await self._consumer.start()
        _leave_from_generation_zero(self._consumer)
        try:
            async with asyncio.timeout(timeout_s):
                await self._listener.joined.wait()
        except TimeoutError:
            raise TimeoutError(f"no partitions assigned in {timeout_s:g} s") from None

    def _forget(self, partitions: Any) -> None:
        for tp in partitions:
            self._pending.pop(tp.partition, None)
            self._fetched.pop(tp.partition, None)

    async def fetch(self, max_count: int = 100, timeout_s: float = 1.0) -> list[Message]:
        if self._closed:
            raise RuntimeError("this subscription is closed")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            records = await self._read(max_count, deadline)
            taken, skipped = self._take(records)
            if skipped:  # only invalid records fetched there: done with them at once
                await self._commit({number: self._fetched[number] for number in skipped})
            if taken or deadline - loop.time() <= 0:
                return taken

    async def _read(self, max_count: int, deadline: float) -> dict[Any, list[Any]]:
        """What ``getmany`` has, then the rest of those partitions' logs up to
        ``max_count``: a fetch answered while events were being published holds only
        the first of them, and ``fetch`` hands out what is there, not what came first.

        Where a partition's log ends is what is known here, without asking the broker
        (a ListOffsets round trip on every fetch, on the way of every event): the high
        watermark of the broker's last fetch answer, or past the last event this
        process's own producer had acknowledged, whichever is further. The high
        watermark alone can be stale: an answer fetched ahead, while the events were
        being published, ends where it was made. Events another process published
        after the answer was made come with the next fetch."""
        loop = asyncio.get_running_loop()

        def left_ms() -> int:
            return max(0, round((deadline - loop.time()) * 1000))

        records: dict[Any, list[Any]] = dict(
            await self._consumer.getmany(timeout_ms=left_ms(), max_records=max_count)
        )
        count = sum(len(batch) for batch in records.values())
        while records and count < max_count and left_ms() > 0:
            behind = [tp for tp, batch in records.items() if batch[-1].offset + 1 < self._end(tp)]
            if not behind:
                break
            more = await self._consumer.getmany(
                *behind, timeout_ms=left_ms(), max_records=max_count - count
            )
            for tp, batch in more.items():
                records[tp] = records.get(tp, []) + batch
                count += len(batch)
            if not more:
                break
        return records

    def _end(self, tp: Any) -> int:
        """Where ``tp``'s log ends, as far as this process knows (``_read``)."""
        sent = self._bus._sent.get(tp, 0)
        if tp not in self._consumer.assignment():  # revoked meanwhile: not ours to read
            return 0
        return max(self._consumer.highwater(tp) or 0, sent)

    def _take(self, records: Mapping[Any, list[Any]]) -> tuple[list[Message], list[int]]:
        """The valid events of the partitions this member still owns, and the partitions
        whose records were all invalid with nothing before them awaiting a commit.
        Records of a partition revoked meanwhile are dropped: its next owner reads them."""
        owned = {tp.partition for tp in self._consumer.assignment()}
        taken: list[Message] = []
        skipped: list[int] = []
        for tp in sorted(records, key=lambda tp: tp.partition):
            number = tp.partition
            if number not in owned:
                continue
            pending = self._pending.setdefault(number, set())
            invalid = False
            for record in records[tp]:
                self._fetched[number] = record.offset + 1
                try:
                    event = events.decode(self._topic, record.value or b"")
                except events.InvalidEvent:
                    self._bus.invalid += 1
                    invalid = True
                    continue
                pending.add(record.offset)
                key = record.key.decode("utf-8", "replace") if record.key else ""
                taken.append(Message(self._topic, number, str(record.offset), key, event))
            if invalid and not pending:
                skipped.append(number)
        return taken, skipped

    async def commit(self, messages: Sequence[Message]) -> None:
        ends: dict[int, int] = {}
        for message in messages:
            number = message.partition
            ends[number] = max(ends.get(number, 0), int(message.position) + 1)
        offsets: dict[int, int] = {}
        for number, end in ends.items():
            pending = self._pending.get(number)
            if pending is None:
                continue  # not (or no longer) ours: its next owner hands it out again
            pending -= {offset for offset in pending if offset < end}
            if not pending:  # nothing fetched is waiting: the invalid records after it too
                end = max(end, self._fetched.get(number, end))
            offsets[number] = end
        await self._commit(offsets)

    async def _commit(self, offsets: Mapping[int, int]) -> None:
        owned = {tp.partition for tp in self._consumer.assignment()}
        wanted = {
            TopicPartition(self._bus.topic(self._topic), number): offset
            for number, offset in offsets.items()
            if number in owned
        }
        if not wanted:
            return
        # If the group rebalanced meanwhile, the new owners read from the last commit.
        with contextlib.suppress(CommitFailedError, IllegalStateError):
            await self._consumer.commit(wanted)

    async def close(self) -> None:
        """Leave the group (LeaveGroup): what was not committed goes to the next owner."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._consumer.stop()
        finally:
            if self in self._bus._subscriptions:
                self._bus._subscriptions.remove(self)


class _Listening:
    """Every listener of a bus on one consumer of its own, in no group.

    A listener is a group of its own that starts at the newest event and goes when it
    closes: no other member shares its partitions, and nothing it commits is ever read
    again. On Kafka it needs no group at all: one consumer, assigned the partitions of
    every topic the bus's listeners follow, fetches for all of them (a server's three
    listeners make one fetch request per wait instead of three, with no JoinGroup, no
    heartbeats and no commits). A reader task hands each record to the listeners of
    its topic that started before it; it waits while one of them holds
    ``LISTENER_KEPT`` records it has not fetched.
    """

    def __init__(self, bus: KafkaBus) -> None:
        self._bus = bus
        self._consumer: Any = None
        self._reader: asyncio.Task[None] | None = None
        self._listeners: list[KafkaListener] = []
        self._changing = asyncio.Lock()
        self._room = asyncio.Event()  # clear while a listener is behind

    async def follow(self, topic: str) -> KafkaListener:
        """A listener of ``topic``, from its current end."""
        async with self._changing:
            await self._pause()
            try:
                if self._consumer is None:
                    consumer = AIOKafkaConsumer(
                        bootstrap_servers=self._bus._bootstrap,
                        client_id="tollhouse-listener",
                        enable_auto_commit=False,
                        fetch_max_wait_ms=self._bus.fetch_wait_ms,
                    )
                    await consumer.start()
                    self._consumer = consumer
                name = self._bus.topic(topic)
                numbers = await self._bus._producer.partitions_for(name)
                partitions = [TopicPartition(name, number) for number in sorted(numbers)]
                ends = await self._consumer.end_offsets(partitions)
                listener = KafkaListener(self, topic, ends)
                await self._assign({*self._consumer.assignment(), *partitions}, ends)
                self._listeners.append(listener)
                self._bus._subscriptions.append(listener)
            except BaseException:
                if not self._listeners and self._consumer is not None:
                    consumer, self._consumer = self._consumer, None
                    await consumer.stop()
                raise
            finally:
                self._resume()
        return listener

    async def unfollow(self, listener: KafkaListener) -> None:
        async with self._changing:
            await self._pause()
            try:
                if listener in self._listeners:
                    self._listeners.remove(listener)
                if not self._listeners:
                    consumer, self._consumer = self._consumer, None
                    if consumer is not None:
                        await consumer.stop()
                    return
                followed = {self._bus.topic(other.topic) for other in self._listeners}
                kept = {tp for tp in self._consumer.assignment() if tp.topic in followed}
                await self._assign(kept, {})
            finally:
                self._resume()

    async def _assign(self, wanted: set[Any], start: Mapping[Any, int]) -> None:
        """Assign ``wanted``: a partition already assigned keeps its position, a new
        one starts at ``start``."""
        consumer = self._consumer
        have = consumer.assignment()
        if wanted == have:
            return
        offsets = {**start}
        for tp in have & wanted:
            offsets[tp] = await consumer.position(tp)
        consumer.assign(sorted(wanted, key=lambda tp: (tp.topic, tp.partition)))
        for tp in wanted:
            consumer.seek(tp, offsets[tp])

    async def _pause(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    def _behind(self) -> bool:
        return any(len(listener._held) >= LISTENER_KEPT for listener in self._listeners)

    def _taken(self) -> None:
        """A listener fetched: the reader goes on if none is behind any more."""
        if not self._room.is_set() and not self._behind():
            self._room.set()

    def _resume(self) -> None:
        if self._consumer is not None and self._listeners and self._reader is None:
            self._reader = asyncio.create_task(self._read(), name="tollhouse-kafka-listeners")

    async def _read(self) -> None:
        while True:
            if self._behind():  # one listener is behind: it catches up first
                self._room.clear()
                await self._room.wait()
                continue
            try:
                records = await self._consumer.getmany(timeout_ms=1000, max_records=1000)
            except asyncio.CancelledError:
                raise
            except Exception:  # the broker is away: aiokafka reconnects
                log.exception("kafka listeners: fetch failed; retrying")
                await asyncio.sleep(1.0)
                continue
            for tp, batch in records.items():
                for listener in self._listeners:
                    if listener._topic_name == tp.topic:
                        listener._hand(tp, batch)


class KafkaListener:
    """A listener (``subscribe(…, listener=True)``): what ``_Listening`` hands it."""

    def __init__(self, listening: _Listening, topic: str, start: Mapping[Any, int]) -> None:
        self._listening = listening
        self._bus = listening._bus
        self.topic = topic
        self._topic_name = self._bus.topic(topic)
        self._start = dict(start)  # per partition, the first offset for this listener
        self._held: deque[Any] = deque()
        self._arrived = asyncio.Event()
        self._closed = False

    def _hand(self, tp: Any, batch: list[Any]) -> None:
        start = self._start.get(tp, 0)
        self._held.extend(record for record in batch if record.offset >= start)
        if self._held:
            self._arrived.set()

    async def fetch(self, max_count: int = 100, timeout_s: float = 1.0) -> list[Message]:
        if self._closed:
            raise RuntimeError("this subscription is closed")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            taken: list[Message] = []
            while self._held and len(taken) < max_count:
                record = self._held.popleft()
                try:
                    event = events.decode(self.topic, record.value or b"")
                except events.InvalidEvent:
                    self._bus.invalid += 1
                    continue
                key = record.key.decode("utf-8", "replace") if record.key else ""
                taken.append(Message(self.topic, record.partition, str(record.offset), key, event))
            self._listening._taken()
            left = deadline - loop.time()
            if taken or left <= 0:
                return taken
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(left):
                    await self._arrived.wait()

    async def commit(self, messages: Sequence[Message]) -> None:
        """Nothing to do: no one else reads what a listener fetched, and it never hands
        out anything twice."""

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._listening.unfollow(self)
        finally:
            self._held.clear()
            if self in self._bus._subscriptions:
                self._bus._subscriptions.remove(self)


def _leave_from_generation_zero(consumer: Any) -> None:
    """Tansu numbers a group's first generation 0 where Kafka starts at 1, and aiokafka
    sends LeaveGroup only from generation 1 on: a member of a new group that closed, or
    stopped fetching, would keep its partitions until its session expired. LeaveGroup
    carries no generation: count generation 0 as joined. (A patch of aiokafka's group
    coordinator, skipped if its internals change; nothing changes on Apache Kafka.)"""
    coordinator: Any = getattr(consumer, "_coordinator", None)
    leave = getattr(coordinator, "_maybe_leave_group", None)
    if leave is None or not hasattr(coordinator, "generation"):
        return

    async def maybe_leave_group() -> None:
        if coordinator.generation == 0:
            coordinator.generation = 1
        await leave()

    coordinator._maybe_leave_group = maybe_leave_group
