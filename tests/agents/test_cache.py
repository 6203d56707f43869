"""The sessions' metadata cache on real Redis, on SQLite and Postgres: once a session is
cached, no route reads ``agent_sessions`` to check its owner (the app's own statements
are counted); a foreign tenant still gets the same 404 from a cached entry; each entry
has the TTL; a stopped or stalled Redis falls back to the database and every route
still answers; without ``redis_url`` (or with a TTL of 0) nothing is cached and every
route reads the database, as before."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import websockets
from sqlalchemy import event
from tests.governance.helpers import auth, create_customer, create_key
from tests.support import LiveServer, decode, redis_down, running

from tollhouse.agents import sessions
from tollhouse.agents.cache import SessionCache, SessionMeta
from tollhouse.app import Tollhouse


def quiet(make_settings, **overrides: Any):
    """Settings whose background work leaves ``agent_sessions`` alone during a test: no
    worker in the process, no redrive pass."""
    return make_settings(agent_worker_in_process=False, session_outbox_interval_s=300, **overrides)


@contextlib.contextmanager
def statements(app: Tollhouse) -> Iterator[list[str]]:
    """Every statement the app's engine runs in the block."""
    seen: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany) -> None:
        seen.append(" ".join(statement.split()))

    engine = app.services.engine.sync_engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def session_reads(seen: list[str]) -> list[str]:
    """The SELECTs of ``agent_sessions`` among ``seen`` (its UPDATEs number the events)."""
    return [s for s in seen if s.upper().startswith("SELECT") and "FROM agent_sessions" in s]


async def tenants(client: httpx.AsyncClient) -> tuple[str, str, str]:
    """Two keys of one customer, and a key of another customer."""
    acme = await create_customer(client, name="acme")
    _, first = await create_key(client, name="a1", customer_id=acme["id"])
    _, second = await create_key(client, name="a2", customer_id=acme["id"])
    globex = await create_customer(client, name="globex")
    _, other = await create_key(client, name="g1", customer_id=globex["id"])
    return first, second, other


async def open_session(client: httpx.AsyncClient, key: str) -> str:
    sent = await client.post("/v1/session/message", json={"message": "hi"}, headers=auth(key))
    assert sent.status_code == 200, sent.text
    return str(decode(sent)["session_id"])


def calls(session_id: str) -> list[tuple[str, str, dict[str, Any] | None]]:
    """Every route that checks the owner of ``session_id`` (the stream aside)."""
    return [
        ("GET", f"/v1/session/{session_id}/events", None),
        ("POST", "/v1/session/message", {"session_id": session_id, "message": "more"}),
        ("POST", f"/v1/session/{session_id}/cancel", None),
    ]


async def cached(app: Tollhouse, session_id: str) -> SessionMeta | None:
    raw = await app.services.redis.get(SessionCache.key(session_id))
    return None if raw is None else SessionMeta.decode(raw)


async def in_database(app: Tollhouse, session_id: str) -> SessionMeta:
    async with app.services.engine.connect() as conn:
        return SessionMeta.of(await sessions.row(conn, session_id))


# -- with Redis -----------------------------------------------------------------------


async def test_a_cached_session_is_not_read_from_the_database(make_settings, db_url, redis_url):
    settings = quiet(make_settings, database_url=db_url, redis_url=redis_url)
    async with running(settings) as (app, client):
        key, _, _ = await tenants(client)
        session_id = await open_session(client, key)
        assert await cached(app, session_id) == await in_database(app, session_id)
        await app.services.redis.delete(SessionCache.key(session_id))  # a miss first

        with statements(app) as first:
            miss = await client.get(f"/v1/session/{session_id}/events", headers=auth(key))
        with statements(app) as second:
            hit = await client.get(f"/v1/session/{session_id}/events", headers=auth(key))
        assert miss.status_code == hit.status_code == 200
        assert decode(miss)["events"] == decode(hit)["events"]
        assert len(session_reads(first)) == 1  # the miss read it, and filled the cache
        assert session_reads(second) == []
        assert any("FROM session_events" in s for s in second)  # the listener does listen
        assert await cached(app, session_id) == await in_database(app, session_id)

        # Every other route answers from the cache too (a message still numbers its event
        # with an UPDATE of the session's row, on the driver: agents/rawlog.py).
        for method, path, body in calls(session_id)[1:]:
            with statements(app) as seen:
                answer = await client.request(method, path, json=body, headers=auth(key))
            assert answer.status_code == 200, answer.text
            assert session_reads(seen) == [], path
        page = decode(await client.get(f"/v1/session/{session_id}/events", headers=auth(key)))
        assert [e["type"] for e in page["events"]] == ["cancel", "message", "message"]


async def test_a_foreign_tenant_gets_the_same_404_from_a_cached_entry(
    make_settings, db_url, redis_url
):
    settings = quiet(make_settings, database_url=db_url, redis_url=redis_url)
    async with running(settings) as (app, client):
        key, same_customer, other = await tenants(client)
        session_id = await open_session(client, key)
        assert await cached(app, session_id) is not None

        refusals = {}
        for method, path, body in calls(session_id):
            with statements(app) as seen:
                refused = await client.request(method, path, json=body, headers=auth(other))
            assert refused.status_code == 404, (path, refused.text)
            assert decode(refused)["error"]["type"] == "not_found_error"
            assert session_reads(seen) == [], path  # decided from the cached tenant
            refusals[path] = refused.json()
        # Another key of the owning customer is the same tenant.
        with statements(app) as seen:
            allowed = await client.get(
                f"/v1/session/{session_id}/events", headers=auth(same_customer)
            )
        assert allowed.status_code == 200 and session_reads(seen) == []
        assert [e["type"] for e in decode(allowed)["events"]] == ["message"]  # nothing written

        # Uncached, the database gives the very same answer.
        await app.services.redis.delete(SessionCache.key(session_id))
        for method, path, body in calls(session_id):
            with statements(app) as seen:
                refused = await client.request(method, path, json=body, headers=auth(other))
            assert refused.status_code == 404 and len(session_reads(seen)) == 1
            assert refused.json() == refusals[path]
        assert await cached(app, session_id) is None  # a refusal caches nothing


async def test_an_unknown_session_is_still_a_404(make_settings, redis_url):
    async with running(quiet(make_settings, redis_url=redis_url)) as (app, client):
        key, _, _ = await tenants(client)
        unknown = "ses_" + "0" * 32
        for method, path, body in calls(unknown):
            refused = await client.request(method, path, json=body, headers=auth(key))
            assert refused.status_code == 404, (path, refused.text)
        assert await cached(app, unknown) is None
        assert await app.services.redis.keys("tollhouse:session:*") == []


async def test_each_entry_expires_after_the_ttl(make_settings, redis_url):
    settings = quiet(make_settings, redis_url=redis_url, session_cache_ttl_s=1)
    async with running(settings) as (app, client):
        key, _, _ = await tenants(client)
        session_id = await open_session(client, key)
        redis = app.services.redis
        assert await redis.ttl(SessionCache.key(session_id)) == 1
        await asyncio.sleep(1.2)
        assert await redis.exists(SessionCache.key(session_id)) == 0
        with statements(app) as seen:  # expired: read again, and cached again
            again = await client.get(f"/v1/session/{session_id}/events", headers=auth(key))
        assert again.status_code == 200 and len(session_reads(seen)) == 1
        assert await redis.ttl(SessionCache.key(session_id)) == 1


async def test_the_default_ttl_is_set_on_every_entry(make_settings, redis_url):
    async with running(quiet(make_settings, redis_url=redis_url)) as (app, client):
        assert app.services.settings.session_cache_ttl_s == 300
        key, _, _ = await tenants(client)
        opened = await open_session(client, key)  # cached when opened
        read = await open_session(client, key)
        await app.services.redis.delete(SessionCache.key(read))
        answer = await client.get(f"/v1/session/{read}/events", headers=auth(key))
        assert answer.status_code == 200  # cached when read
        for session_id in (opened, read):
            assert 0 < await app.services.redis.ttl(SessionCache.key(session_id)) <= 300


async def test_an_unreadable_entry_is_a_miss_and_is_overwritten(make_settings, redis_url, caplog):
    async with running(quiet(make_settings, redis_url=redis_url)) as (app, client):
        key, _, _ = await tenants(client)
        session_id = await open_session(client, key)
        await app.services.redis.set(SessionCache.key(session_id), b'{"id": 1}', ex=60)
        with statements(app) as seen, caplog.at_level(logging.WARNING, "tollhouse.agents"):
            answer = await client.get(f"/v1/session/{session_id}/events", headers=auth(key))
        assert answer.status_code == 200 and len(session_reads(seen)) == 1
        assert any("entry unreadable" in r.getMessage() for r in caplog.records)
        assert await cached(app, session_id) == await in_database(app, session_id)


# -- Redis away ---------------------------------------------------------------------------


async def test_a_stopped_redis_falls_back_to_the_database(
    make_settings, db_url, redis_url, redis_server, caplog
):
    settings = quiet(make_settings, database_url=db_url, redis_url=redis_url)
    async with running(settings) as (app, client):
        key, _, other = await tenants(client)
        session_id = await open_session(client, key)  # cached, then Redis goes
        with redis_down(redis_server), caplog.at_level(logging.WARNING, "tollhouse.agents"):
            fresh = await open_session(client, key)  # not cached: logged, answered
            assert any("session cache not written" in r.getMessage() for r in caplog.records)
            for method, path, body in calls(session_id) + calls(fresh):
                with statements(app) as seen:
                    answer = await client.request(method, path, json=body, headers=auth(key))
                assert answer.status_code == 200, (path, answer.text)
                assert len(session_reads(seen)) == 1  # the database answered
                refused = await client.request(method, path, json=body, headers=auth(other))
                assert refused.status_code == 404, (path, refused.text)
            assert any("session cache not read" in r.getMessage() for r in caplog.records)
        # Back (empty): the next read fills the cache again.
        answer = await client.get(f"/v1/session/{fresh}/events", headers=auth(key))
        assert answer.status_code == 200
        assert [e["type"] for e in decode(answer)["events"]] == ["cancel", "message", "message"]
        assert await cached(app, fresh) == await in_database(app, fresh)


async def test_a_redis_that_times_out_falls_back_once_per_request(
    make_settings, redis_url, redis_server, caplog
):
    settings = quiet(make_settings, redis_url=redis_url, redis_timeout_s=0.3)
    async with running(settings) as (app, client):
        key, _, _ = await tenants(client)
        session_id = await open_session(client, key)
        await app.services.redis.delete(SessionCache.key(session_id))
        with redis_server.client() as admin, caplog.at_level(logging.WARNING, "tollhouse.agents"):
            admin.execute_command("CLIENT", "PAUSE", "4000", "ALL")  # Redis stalls
            try:
                began = time.monotonic()
                answer = await client.get(f"/v1/session/{session_id}/events", headers=auth(key))
                took = time.monotonic() - began
            finally:
                admin.execute_command("CLIENT", "UNPAUSE")
        assert answer.status_code == 200, answer.text
        # One timeout, not the pause: after a failed read the cache is not written either.
        assert took < 2.5, took
        warnings = [r.getMessage() for r in caplog.records if r.name == "tollhouse.agents"]
        assert warnings == ["session cache not read; reading the database"]
        assert await cached(app, session_id) is None


# -- no cache -------------------------------------------------------------------------------


async def test_with_a_ttl_of_0_every_check_reads_the_database(make_settings, redis_url):
    overrides = {"redis_url": redis_url, "session_cache_ttl_s": 0}
    async with running(quiet(make_settings, **overrides)) as (app, client):
        key, same_customer, other = await tenants(client)
        session_id = await open_session(client, key)
        for _ in range(2):
            for method, path, body in calls(session_id):
                with statements(app) as seen:
                    answer = await client.request(method, path, json=body, headers=auth(key))
                assert answer.status_code == 200, (path, answer.text)
                assert len(session_reads(seen)) == 1, path
                refused = await client.request(method, path, json=body, headers=auth(other))
                assert refused.status_code == 404
        allowed = await client.get(f"/v1/session/{session_id}/events", headers=auth(same_customer))
        assert allowed.status_code == 200
        assert await app.services.redis.keys("tollhouse:session:*") == []


async def test_without_redis_the_process_keeps_the_entries(make_settings):
    async with running(quiet(make_settings)) as (app, client):
        key, same_customer, other = await tenants(client)
        session_id = await open_session(client, key)  # kept when opened
        for method, path, body in calls(session_id):
            with statements(app) as seen:
                answer = await client.request(method, path, json=body, headers=auth(key))
            assert answer.status_code == 200, (path, answer.text)
            assert session_reads(seen) == [], path
            refused = await client.request(method, path, json=body, headers=auth(other))
            assert refused.status_code == 404  # decided from the kept entry as well
        allowed = await client.get(f"/v1/session/{session_id}/events", headers=auth(same_customer))
        assert allowed.status_code == 200


# -- the stream -------------------------------------------------------------------------------


def post(live: LiveServer, path: str, body: dict, key: str | None = None) -> dict:
    headers = auth(key) if key else {}
    answer = httpx.post(f"{live.url}{path}", json=body, headers=headers)
    assert answer.status_code in (200, 201), answer.text
    return dict(answer.json())


def new_key(live: LiveServer, customer: str) -> str:
    owner = post(live, "/api/governance/customers", {"name": customer})["customer"]["id"]
    made = post(live, "/api/governance/virtual-keys", {"name": "k", "customer_id": owner})
    return str(made["virtual_key"]["value"])


async def test_the_stream_checks_its_owner_from_the_cache(make_settings, redis_url):
    settings = quiet(make_settings, redis_url=redis_url, session_heartbeat_s=0.3)
    with LiveServer(settings) as live:
        key, other = new_key(live, "acme"), new_key(live, "globex")
        sent = post(live, "/v1/session/message", {"message": "hi"}, key)
        url = f"ws://127.0.0.1:{live.port}/v1/session/{sent['session_id']}/stream"
        with statements(live.app) as seen:
            async with websockets.connect(
                f"{url}?after={sent['event_id']}", additional_headers=auth(key)
            ) as ws:
                async with asyncio.timeout(5):
                    heartbeat = await ws.recv()
            async with websockets.connect(url, additional_headers=auth(other)) as ws:
                with pytest.raises(websockets.ConnectionClosed) as closed:
                    async with asyncio.timeout(5):
                        await ws.recv()
        assert '"heartbeat"' in str(heartbeat)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4004
        assert session_reads(seen) == []
