"""The bus a server has, from its settings (docs/agents.md, *The bus*)."""

from __future__ import annotations

from tollhouse.bus.backends import EventBus
from tollhouse.bus.memory import MemoryBus
from tollhouse.config import Settings
from tollhouse.errors import ConfigError


def bus_from_settings(settings: Settings) -> EventBus:
    partitions, max_len, lease_s = (
        settings.bus_partitions,
        settings.bus_max_len,
        settings.bus_lease_s,
    )
    if settings.bus_backend == "redis":
        if not settings.redis_url:
            raise ConfigError("bus_backend: redis needs redis_url")
        from tollhouse.bus.redis import RedisBus  # the optional redis extra

        return RedisBus(
            settings.redis_url,
            namespace=settings.bus_namespace,
            partitions=partitions,
            max_len=max_len,
            lease_s=lease_s,
        )
    if settings.bus_backend == "kafka":
        if not settings.bus_kafka_bootstrap:
            raise ConfigError("bus_backend: kafka needs bus_kafka_bootstrap")
        try:
            from tollhouse.bus.kafka import KafkaBus  # type: ignore[import-not-found,unused-ignore]
        except ImportError:
            raise ConfigError(
                "bus_backend: kafka needs the kafka extra: pip install 'tollhouse[kafka]'"
            ) from None
        bus: EventBus = KafkaBus(
            settings.bus_kafka_bootstrap,
            namespace=settings.bus_namespace,
            partitions=partitions,
            max_len=max_len,
            lease_s=lease_s,
            fetch_wait_ms=settings.bus_kafka_fetch_wait_ms,
        )
        return bus
    return MemoryBus(partitions=partitions, max_len=max_len, lease_s=lease_s)
