"""The Redis meter with Redis away: a key that fails open is admitted on the replica's
local meter, and those reservations expire like any other (the sweep does not wait for
Redis to come back to release them)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.asyncio import Redis
from tests.admission.meters import TTL_S, Harness, counter

from tollhouse.admission import CounterId, MeterUnreachable, Refusal
from tollhouse.admission.redis import RedisMeter

BUDGET: CounterId = ("budget", "b1")


def closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def away(tmp_path: Path) -> Iterator[tuple[Harness, RedisMeter]]:
    h = Harness("memory", tmp_path, None)  # its ledger and clock; the meter is ours
    client = Redis(host="127.0.0.1", port=closed_port(), socket_connect_timeout=0.5)
    meter = RedisMeter(client, h.ledger, ttl_s=TTL_S, clock=lambda: h.now_us * 1000)
    h.run(meter.track({BUDGET: counter("budget", 100)}, h.now))
    try:
        yield h, meter
    finally:
        h.run(client.aclose())
        h.close()


def test_failing_closed_refuses_with_the_store_unreachable(away):
    h, meter = away
    with pytest.raises(MeterUnreachable):
        h.run(meter.reserve("r1", (BUDGET,), (10,), h.now_us))


def test_local_admissions_expire_while_redis_is_still_away(away):
    h, meter = away
    held = h.run(meter.reserve("r1", (BUDGET,), (70,), h.now_us, fail_open=True))
    assert not isinstance(held, Refusal) and held.local is not None
    refused = h.run(meter.reserve("r2", (BUDGET,), (40,), h.now_us, fail_open=True))
    assert isinstance(refused, Refusal)  # the local view holds what it admitted

    h.advance(TTL_S - 0.001)
    assert h.run(meter.sweep(h.now)) == 0
    h.advance(0.001)
    assert h.run(meter.sweep(h.now)) == 1  # Redis's part is skipped, not an error
    assert meter.counters[BUDGET].reserved == 0
    again = h.run(meter.reserve("r3", (BUDGET,), (40,), h.now_us, fail_open=True))
    assert not isinstance(again, Refusal)
