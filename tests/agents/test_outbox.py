"""The outbox of a session's client events, on SQLite and Postgres: a message or cancel
the bus refused (a Redis that is down) is still answered 200 and waits in the log; the
redrive publishes it once, marks it and never publishes a published event again; a
session's events reach the bus in seq order, whether the redrive or a later request
carries them; two servers redriving at once (Postgres) publish each event once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine
from tests.governance.helpers import auth, create_customer, create_key
from tests.support import decode, engine_for, redis_down, running

from tollhouse.agents import outbox, sessions
from tollhouse.agents.models import session_events
from tollhouse.agents.outbox import Redrive
from tollhouse.bus import events
from tollhouse.bus.backends import EventBus
from tollhouse.bus.events import INBOUND
from tollhouse.bus.memory import MemoryBus
from tollhouse.bus.redis import RedisBus

_e = session_events.c
KEY = SimpleNamespace(scope=SimpleNamespace(kind="key", id="vk_1"), chain=())
LATER = timedelta(seconds=60)  # past any grace of these tests' redrives


# -- helpers -----------------------------------------------------------------------------


async def open_session(engine: AsyncEngine) -> str:
    async with engine.begin() as conn:
        return str((await sessions.open_session(conn, KEY, None)).id)


async def logged(engine: AsyncEngine, session_id: str, n: int) -> list[str]:
    """``n`` messages written to the session's log and never published, as when the
    process died between the commit and the publish; their ids, by seq."""
    ids = []
    for i in range(n):
        event = {
            "event_id": events.new_event_id(),
            "session_id": session_id,
            "type": "message",
            "message": f"#{i}",
            "created_at": events.now(),
        }
        async with engine.begin() as conn:
            await sessions.append(conn, session_id, "conversation_event", event)
        ids.append(event["event_id"])
    return ids


async def published_at(engine: AsyncEngine, event_ids: list[str]) -> dict[str, Any]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(_e.event_id, _e.published_at).where(_e.event_id.in_(event_ids))
        )
        return dict(rows.all())


async def on_the_bus(bus: EventBus) -> list[dict[str, Any]]:
    """Everything ``conversation.inbound`` holds, in the order of each partition."""
    sub = await bus.subscribe(INBOUND, f"check-{uuid.uuid4().hex[:8]}", "reader")
    try:
        found = []
        while batch := await sub.fetch(max_count=1000, timeout_s=0.2):
            found += [m.event for m in batch]
            await sub.commit(batch)
        return found
    finally:
        await sub.close()


def per_session(found: list[dict[str, Any]]) -> dict[str, list[str]]:
    ids: dict[str, list[str]] = {}
    for event in found:
        ids.setdefault(event["session_id"], []).append(event["event_id"])
    return ids


@pytest.fixture
async def memory_bus() -> MemoryBus:
    bus = MemoryBus(partitions=4)
    await bus.start()
    return bus


@contextlib.asynccontextmanager
async def redis_bus(url: str) -> AsyncIterator[RedisBus]:
    bus = RedisBus(url, namespace=f"t{uuid.uuid4().hex[:10]}", partitions=4)
    await bus.start()
    try:
        yield bus
    finally:
        await bus.close()


# -- through the API, a bus that fails for real --------------------------------------------


async def test_a_refused_publish_is_answered_and_redriven_once(
    make_settings, db_url, redis_url, redis_server, caplog
):
    settings = make_settings(
        database_url=db_url,
        redis_url=redis_url,
        bus_backend="redis",
        agent_worker_in_process=False,  # the test reads the inbound topic itself
        session_outbox_interval_s=0.1,
    )
    async with running(settings) as (app, client):
        customer = await create_customer(client, name="acme")
        _, value = await create_key(client, name="agent", customer_id=customer["id"])
        with redis_down(redis_server), caplog.at_level(logging.WARNING, "tollhouse.agents"):
            first = await client.post(
                "/v1/session/message", json={"message": "first"}, headers=auth(value)
            )
            assert first.status_code == 200, first.text  # durable: it will be delivered
            session_id = decode(first)["session_id"]
            second = await client.post(
                "/v1/session/message",
                json={"session_id": session_id, "message": "second"},
                headers=auth(value),
            )
            stop = await client.post(f"/v1/session/{session_id}/cancel", headers=auth(value))
            assert second.status_code == stop.status_code == 200
            ids = [decode(r)["event_id"] for r in (first, second, stop)]
            assert set((await published_at(app.services.engine, ids)).values()) == {None}
            assert any("not published" in r.getMessage() for r in caplog.records)
            await asyncio.sleep(0.5)  # passes of the redrive fail too, and mark nothing
            assert set((await published_at(app.services.engine, ids)).values()) == {None}

        for _ in range(100):  # Redis is back: the next passes publish them
            if None not in (await published_at(app.services.engine, ids)).values():
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError("the redrive did not publish the waiting events")
        await asyncio.sleep(0.5)  # more passes: nothing is published again
        found = await on_the_bus(app.services.bus)
    assert [e["event_id"] for e in found] == ids  # once each, in the session's order
    assert [e.get("message", e["type"]) for e in found] == ["first", "second", "cancel"]


async def test_the_next_message_carries_the_ones_that_failed_before_it(
    make_settings, db_url, redis_url, redis_server
):
    settings = make_settings(
        database_url=db_url,
        redis_url=redis_url,
        bus_backend="redis",
        agent_worker_in_process=False,
        session_outbox_interval_s=300,  # no redrive pass during the test
    )
    async with running(settings) as (app, client):
        customer = await create_customer(client, name="acme")
        _, value = await create_key(client, name="agent", customer_id=customer["id"])
        with redis_down(redis_server):
            first = decode(
                await client.post(
                    "/v1/session/message", json={"message": "first"}, headers=auth(value)
                )
            )
            session_id = first["session_id"]
            stop = decode(
                await client.post(f"/v1/session/{session_id}/cancel", headers=auth(value))
            )
        third = await client.post(
            "/v1/session/message",
            json={"session_id": session_id, "message": "third"},
            headers=auth(value),
        )
        assert third.status_code == 200
        ids = [first["event_id"], stop["event_id"], decode(third)["event_id"]]
        # Sent with it, before it: the message does not overtake those that failed.
        assert [e["event_id"] for e in await on_the_bus(app.services.bus)] == ids
        assert None not in (await published_at(app.services.engine, ids)).values()


# -- the redrive itself ------------------------------------------------------------------


async def test_the_redrive_publishes_what_was_left_once_in_seq_order(engine, memory_bus):
    redrive = Redrive(engine, memory_bus, interval_s=5)
    one, two = await open_session(engine), await open_session(engine)
    delivered = await logged(engine, one, 2)
    async with engine.begin() as conn:
        rows = await outbox.waiting(conn, one)
    await outbox.deliver(engine, memory_bus, rows)  # a request that went through
    left = {one: await logged(engine, one, 3), two: await logged(engine, two, 2)}

    assert await redrive.run_once() == 0  # not older than the grace: may be on their way
    assert await redrive.run_once(datetime.now(UTC) + LATER) == 5
    stamped = await published_at(engine, [*delivered, *left[one], *left[two]])
    assert None not in stamped.values()
    assert await redrive.run_once(datetime.now(UTC) + 2 * LATER) == 0  # never again
    assert per_session(await on_the_bus(memory_bus)) == {
        one: [*delivered, *left[one]],
        two: left[two],
    }


async def test_a_pass_is_bounded_and_the_next_goes_on_in_order(engine, memory_bus):
    redrive = Redrive(engine, memory_bus, interval_s=5, batch=2)
    session_id = await open_session(engine)
    ids = await logged(engine, session_id, 5)
    later = datetime.now(UTC) + LATER
    assert [await redrive.run_once(later) for _ in range(4)] == [2, 2, 1, 0]
    assert [e["event_id"] for e in await on_the_bus(memory_bus)] == ids


async def test_a_young_event_holds_back_the_ones_after_it(engine, memory_bus):
    # Two requests at once can take their seqs in the other order than their clocks: the
    # redrive takes a session's events from the oldest seq on, and stops at a young one.
    redrive = Redrive(engine, memory_bus, interval_s=5)
    session_id = await open_session(engine)
    young, old = await logged(engine, session_id, 2)
    async with engine.begin() as conn:
        await conn.execute(
            update(session_events)
            .where(_e.event_id == old)
            .values(created_at=datetime.now(UTC) - LATER)
        )
    assert await redrive.run_once() == 0
    assert await redrive.run_once(datetime.now(UTC) + LATER) == 2
    assert [e["event_id"] for e in await on_the_bus(memory_bus)] == [young, old]


async def test_a_bus_that_fails_marks_nothing_and_the_next_pass_publishes(
    engine, memory_bus, redis_url
):
    session_id = await open_session(engine)
    ids = await logged(engine, session_id, 3)
    async with redis_bus(redis_url) as closed:
        pass  # closed: its publish raises
    assert await Redrive(engine, closed, interval_s=5).run_once(datetime.now(UTC) + LATER) == 0
    assert set((await published_at(engine, ids)).values()) == {None}
    assert await Redrive(engine, memory_bus, interval_s=5).run_once(datetime.now(UTC) + LATER) == 3
    assert [e["event_id"] for e in await on_the_bus(memory_bus)] == ids


async def test_two_servers_redriving_at_once_publish_each_event_once(pg_engine, pg_url, redis_url):
    written = {}
    for _ in range(12):
        session_id = await open_session(pg_engine)
        written[session_id] = await logged(pg_engine, session_id, 3)
    later = datetime.now(UTC) + LATER
    async with engine_for(pg_url, migrated=False) as other, redis_bus(redis_url) as bus:
        servers = [Redrive(pg_engine, bus, interval_s=5), Redrive(other, bus, interval_s=5)]
        counts = await asyncio.gather(*(s.run_once(later) for s in servers))
        assert sum(counts) == 36
        assert per_session(await on_the_bus(bus)) == written
