"""The bus backends the contract suite runs on, each a fresh namespace per test:
``memory``; ``redis`` on the session's redis-server; ``kafka`` on the session's
Kafka-protocol broker (Tansu).

Kafka runs with a 2 s session timeout: Tansu holds every JoinGroup for half of it
(rounded up to whole seconds), so the default (the lease, 10 s) would make each member
take 5 s to join. The lease itself — how long a member may stop fetching — is the
test's."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest

from tollhouse.bus.memory import MemoryBus


@dataclass
class Flavor:
    name: str
    make: Callable[..., Any]  # make(lease_s=…, max_len=…, partitions=…) -> a started bus
    inject: Callable[[Any, str, str, bytes], Awaitable[None]]  # raw bytes, unchecked
    made: list[Any]


async def _memory_inject(bus: MemoryBus, topic: str, key: str, raw: bytes) -> None:
    bus.inject(topic, key, raw)


@pytest.fixture(params=["memory", "redis", "kafka"])
async def flavor(request: pytest.FixtureRequest) -> AsyncIterator[Flavor]:
    namespace = f"t{uuid.uuid4().hex[:10]}"
    made: list[Any] = []
    if request.param == "memory":

        async def make_memory(**options: Any) -> MemoryBus:
            bus = MemoryBus(**options)
            await bus.start()
            made.append(bus)
            return bus

        yield Flavor("memory", make_memory, _memory_inject, made)
    elif request.param == "redis":
        from tollhouse.bus.redis import RedisBus

        url = request.getfixturevalue("redis_url")

        async def make_redis(**options: Any) -> RedisBus:
            bus = RedisBus(url, namespace=namespace, **options)
            await bus.start()
            made.append(bus)
            return bus

        async def inject(bus: RedisBus, topic: str, key: str, raw: bytes) -> None:
            await bus.inject(topic, key, raw)

        yield Flavor("redis", make_redis, inject, made)
    elif request.param == "kafka":
        from tollhouse.bus.kafka import KafkaBus

        bootstrap = request.getfixturevalue("kafka_bootstrap")

        async def make_kafka(**options: Any) -> KafkaBus:
            bus = KafkaBus(bootstrap, namespace=namespace, session_timeout_s=2.0, **options)
            await bus.start()
            made.append(bus)
            return bus

        async def inject_kafka(bus: KafkaBus, topic: str, key: str, raw: bytes) -> None:
            await bus.inject(topic, key, raw)

        yield Flavor("kafka", make_kafka, inject_kafka, made)
    for bus in made:
        await bus.close()
