"""``bus_from_settings``: the bus a server starts with is the one its settings name —
in memory by default, Redis Streams on ``redis_url``, Kafka on ``bus_kafka_bootstrap`` —
with the settings' partitions, length and lease; a backend without its address, or
without its extra, stops start-up with a ``ConfigError`` that says what to set."""

from __future__ import annotations

import sys

import pytest
import redis
from tests.bus.test_contract import TOPIC, message

from tollhouse.bus.memory import MemoryBus
from tollhouse.bus.setup import bus_from_settings
from tollhouse.errors import ConfigError


async def test_the_default_bus_is_in_memory_with_the_settings_partitions(make_settings):
    bus = bus_from_settings(make_settings(bus_partitions=3))
    assert isinstance(bus, MemoryBus) and bus.partitions == 3
    await bus.start()
    position = await bus.publish(TOPIC, message("ses_setup0001", 1))
    assert 0 <= int(position.split("-")[0]) < 3
    await bus.close()


def test_a_redis_bus_without_redis_url_names_the_setting(make_settings):
    with pytest.raises(ConfigError, match="bus_backend: redis needs redis_url"):
        bus_from_settings(make_settings(bus_backend="redis"))


async def test_a_redis_bus_publishes_to_the_redis_of_redis_url(make_settings, redis_url):
    from tollhouse.bus.redis import RedisBus

    settings = make_settings(bus_backend="redis", redis_url=redis_url, bus_partitions=3)
    bus = bus_from_settings(settings)
    assert isinstance(bus, RedisBus) and bus.partitions == 3
    await bus.start()
    try:
        position = await bus.publish(TOPIC, message("ses_setup0001", 1))
        partition = int(position.split("-")[0])
        assert 0 <= partition < 3
        # The event is in that Redis, read by a client of its own: the bus is not
        # talking to some other server.
        with redis.Redis.from_url(redis_url) as other:
            assert other.xlen(bus.stream(TOPIC, partition)) == 1
    finally:
        await bus.close()
    with pytest.raises(RuntimeError, match="not started"):  # closed: its connection is gone
        await bus.publish(TOPIC, message("ses_setup0001", 2))


def test_a_kafka_bus_without_bootstrap_names_the_setting(make_settings):
    with pytest.raises(ConfigError, match="bus_backend: kafka needs bus_kafka_bootstrap"):
        bus_from_settings(make_settings(bus_backend="kafka"))


def test_a_kafka_bus_without_the_kafka_extra_says_how_to_install_it(
    make_settings, kafka_bootstrap, monkeypatch
):
    # An environment without aiokafka, as `pip install tollhouse` leaves it: the module
    # of the Kafka bus is imported afresh and fails on its first import, for real.
    monkeypatch.setitem(sys.modules, "aiokafka", None)
    monkeypatch.delitem(sys.modules, "tollhouse.bus.kafka", raising=False)
    settings = make_settings(bus_backend="kafka", bus_kafka_bootstrap=kafka_bootstrap)
    with pytest.raises(ConfigError, match=r"pip install 'tollhouse\[kafka\]'"):
        bus_from_settings(settings)


async def test_a_kafka_bus_starts_on_the_bootstrap_servers(make_settings, kafka_bootstrap):
    from tollhouse.bus.kafka import KafkaBus

    settings = make_settings(
        bus_backend="kafka", bus_kafka_bootstrap=kafka_bootstrap, bus_partitions=2, bus_lease_s=6.0
    )
    bus = bus_from_settings(settings)
    assert isinstance(bus, KafkaBus)
    assert bus.partitions == 2 and bus.lease_s == 6.0
    await bus.start()  # connects and creates its topics on that broker, or raises
    await bus.close()
