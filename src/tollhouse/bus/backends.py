"""One ``EventBus`` Protocol for the agents' events, three backends, one contract suite
(``tests/bus/test_contract.py``; docs/agents.md, *The bus*):

- ``memory`` — in this process (the embedded default: one server runs the gateway, the
  worker and the tools);
- ``redis`` — Redis Streams with consumer groups (``redis_url``);
- ``kafka`` — Kafka through aiokafka (``bus_kafka_bootstrap``).

**The contract.** A topic has ``partitions`` partitions; an event goes to the partition
of its key (its ``session_id``), so a session's events keep their order. A consumer
group shares a topic's partitions among its live members, each partition read by one
member at a time: a session's events are handled in order, by one consumer. Delivery is
**at least once**: ``fetch`` hands out a batch, ``commit`` marks it done; what was
fetched and not committed — the consumer died, or closed, mid-batch — is handed out
again to whichever member owns the partition next, before anything newer. Consumers
are therefore idempotent on ``event_id``. A member that stops fetching for
``lease_s`` is taken for dead and its partitions move. Events are checked against
their schema on ``publish`` (refused) and on ``fetch`` (skipped, counted in
``invalid`` and committed, so a bad event never blocks its partition). Old events are
trimmed (``bus_max_len`` per partition on memory and Redis; retention on Kafka).
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    partition: int
    position: str  # the backend's own id of the event (a stream id, an offset…)
    key: str
    event: dict[str, Any]


class Subscription(Protocol):
    async def fetch(self, max_count: int = 100, timeout_s: float = 1.0) -> list[Message]:
        """Up to ``max_count`` events of the partitions this member owns, oldest first
        per partition (redeliveries before new events); waits up to ``timeout_s`` for
        one. Also keeps this member alive in its group."""

    async def commit(self, messages: Sequence[Message]) -> None:
        """Done with ``messages`` (a batch ``fetch`` gave): they are not handed out again."""

    async def close(self) -> None:
        """Leave the group; what was fetched and not committed goes to another member."""


class EventBus(Protocol):
    name: str
    partitions: int
    invalid: int  # events refused on fetch (and skipped), since start

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def publish(self, topic: str, event: Mapping[str, Any]) -> str:
        """Check ``event`` (``InvalidEvent``) and append it to its session's partition;
        its position once written."""

    async def subscribe(
        self, topic: str, group: str, consumer: str, *, listener: bool = False
    ) -> Subscription:
        """Join ``group`` on ``topic`` as ``consumer`` (a name unique in the group).
        ``listener``: the group is this member's alone, starts at the newest event and
        goes when it closes (a server following every session's events to wake its
        streams); otherwise a new group starts at the oldest event kept."""


def partition_of(key: str, partitions: int) -> int:
    """The partition of a key on the memory and Redis backends (Kafka uses its own
    partitioner: what matters is that one key always lands in one partition)."""
    return zlib.crc32(key.encode("utf-8")) % partitions


def shares(members: Sequence[str], partitions: int) -> dict[str, list[int]]:
    """The partitions each member owns when ``members`` are alive: round robin over the
    members in name order, so every member works the same out without talking."""
    ordered = sorted(members)
    owned: dict[str, list[int]] = {member: [] for member in ordered}
    for partition in range(partitions):
        owned[ordered[partition % len(ordered)]].append(partition)
    return owned
