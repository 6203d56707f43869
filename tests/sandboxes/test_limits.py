"""``TrackLimiter`` beyond what the broker API tests show (one server, in memory): with
Redis, every server counts a track in the same window, so a track has one allowance
across the deployment, not one per server; windows are per track and per minute; a Redis
that does not answer lets requests through and says so; and the in-memory table stays
bounded, dropping past minutes' windows before this minute's counts."""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator, Iterator

import pytest
from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from tollhouse.errors import RateLimited
from tollhouse.sandboxes import limits
from tollhouse.sandboxes.limits import TrackLimiter

MINUTE = 60 * 29_000_000  # the start of some minute; `now=` keeps the tests off the clock


@pytest.fixture
async def two_clients(redis_url: str) -> AsyncIterator[list[Redis]]:
    """Two clients of the same Redis, one per server, as two replicas would have."""
    clients = [Redis.from_url(redis_url), Redis.from_url(redis_url)]
    yield clients
    for client in clients:
        await client.aclose()


async def test_two_servers_share_one_allowance_per_track(two_clients):
    one, two = (TrackLimiter(3, client) for client in two_clients)
    await one.hit("busy", now=MINUTE + 15)
    await two.hit("busy", now=MINUTE + 16)
    await one.hit("busy", now=MINUTE + 17)
    # Each server has counted at most two: only a shared count refuses the fourth.
    with pytest.raises(RateLimited, match="more than 3") as refused:
        await two.hit("busy", now=MINUTE + 20)
    assert refused.value.status == 429
    assert refused.value.headers == {"retry-after": "40"}  # until the next minute
    with pytest.raises(RateLimited):  # a refused request counts too, on every server
        await one.hit("busy", now=MINUTE + 59.5)


async def test_another_track_has_its_own_allowance(two_clients):
    one, two = (TrackLimiter(2, client) for client in two_clients)
    for limiter in (one, two):
        await limiter.hit("busy", now=MINUTE + 1)
    with pytest.raises(RateLimited):
        await one.hit("busy", now=MINUTE + 2)
    for limiter in (two, one):
        await limiter.hit("calm", now=MINUTE + 3)
    with pytest.raises(RateLimited, match="'calm'"):
        await two.hit("calm", now=MINUTE + 4)


async def test_a_new_minute_is_a_new_allowance(two_clients):
    one, two = (TrackLimiter(1, client) for client in two_clients)
    await one.hit("busy", now=MINUTE + 58)
    with pytest.raises(RateLimited) as refused:
        await two.hit("busy", now=MINUTE + 59.9)
    assert refused.value.headers["retry-after"] == "1"  # its last second: wait one
    await two.hit("busy", now=MINUTE + 60)
    with pytest.raises(RateLimited):
        await one.hit("busy", now=MINUTE + 61)


async def test_the_shared_counts_expire(two_clients):
    # A window is only needed for its minute: a key kept for ever would be a leak of
    # one key per track per minute in the deployment's Redis.
    client = two_clients[0]
    await TrackLimiter(5, client).hit("busy", now=MINUTE)
    keys = await client.keys("*")
    assert len(keys) == 1
    assert 0 < await client.ttl(keys[0]) <= 120


async def test_no_allowance_set_means_no_limit_and_no_counting(two_clients):
    client = two_clients[0]
    limiter = TrackLimiter(0, client)
    for second in range(5):
        await limiter.hit("busy", now=MINUTE + second)
    assert await client.keys("*") == []  # not even a round trip to Redis


@pytest.fixture(params=["refused", "silent"])
def away_port(request: pytest.FixtureRequest) -> Iterator[int]:
    """A loopback port where Redis does not answer: nothing listens there (``refused``),
    or a socket listens and never replies (``silent``, as a hung server would)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        if request.param == "silent":
            probe.listen()
            yield int(probe.getsockname()[1])
            return
        port = int(probe.getsockname()[1])
    yield port


async def test_a_redis_that_does_not_answer_lets_requests_through_and_warns(away_port, caplog):
    caplog.set_level(logging.WARNING, logger="tollhouse.sandboxes")
    # No retries, as the app's client (retries are its callers'): a plain client would
    # retry ten times with backoff before giving up.
    away = Redis(
        host="127.0.0.1",
        port=away_port,
        socket_timeout=0.2,
        socket_connect_timeout=0.2,
        retry=Retry(NoBackoff(), 0),
    )
    try:
        limiter = TrackLimiter(1, away)
        for second in range(3):  # past the allowance: nothing counts, nothing is refused
            await limiter.hit("busy", now=MINUTE + second)
    finally:
        await away.aclose()
    warnings = [r for r in caplog.records if r.getMessage() == "track limit not counted"]
    assert len(warnings) == 3
    assert all(r.levelno == logging.WARNING and r.error for r in warnings)


async def test_dropping_old_windows_keeps_the_current_counts(monkeypatch):
    monkeypatch.setattr(limits, "_MAX_TRACKS", 3)
    limiter = TrackLimiter(2)
    await limiter.hit("gone-1", now=MINUTE - 30)
    await limiter.hit("gone-2", now=MINUTE - 30)
    await limiter.hit("busy", now=MINUTE)
    await limiter.hit("busy", now=MINUTE + 1)
    # The table is full: a new track drops last minute's windows, not this minute's.
    await limiter.hit("new", now=MINUTE + 2)
    assert len(limiter._counts) <= 3  # the bound the constant promises
    with pytest.raises(RateLimited):
        await limiter.hit("busy", now=MINUTE + 3)
    await limiter.hit("new", now=MINUTE + 4)
    with pytest.raises(RateLimited):
        await limiter.hit("new", now=MINUTE + 5)


async def test_a_table_full_of_this_minute_starts_over_rather_than_grow(monkeypatch):
    monkeypatch.setattr(limits, "_MAX_TRACKS", 2)
    limiter = TrackLimiter(1)
    await limiter.hit("first", now=MINUTE)
    await limiter.hit("second", now=MINUTE + 1)
    await limiter.hit("third", now=MINUTE + 2)  # nothing old to drop: the table is emptied
    assert len(limiter._counts) == 1
    # Memory wins over precision here: the tracks dropped get a fresh allowance, and the
    # newcomer is counted from the start.
    await limiter.hit("first", now=MINUTE + 3)
    with pytest.raises(RateLimited):
        await limiter.hit("third", now=MINUTE + 4)
