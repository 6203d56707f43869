"""The session store on SQLite and Postgres: a session belongs to its key's tenant
(another tenant's is a 404), its events are numbered one at a time even when written in
parallel, an event seen twice is written once, and a client reads them back newest first
or resumes after an event it names (a stale anchor is a 404, never a replay)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from tollhouse.agents import sessions
from tollhouse.bus import events
from tollhouse.errors import NotFound


def key(key_id: str, *chain: tuple[str, str]) -> SimpleNamespace:
    scope = SimpleNamespace(kind="key", id=key_id)
    above = [SimpleNamespace(kind=kind, id=ident) for kind, ident in chain]
    return SimpleNamespace(scope=scope, chain=(scope, *above))


ACME = key("vk_1", ("team", "team_a"), ("customer", "cust_acme"))
ACME_OTHER_KEY = key("vk_2", ("customer", "cust_acme"))
GLOBEX = key("vk_3", ("customer", "cust_globex"))


def event(session_id: str, n: int = 0, event_id: str | None = None) -> dict:
    return {
        "event_id": event_id or events.new_event_id(),
        "session_id": session_id,
        "type": "message",
        "message": f"#{n}",
        "created_at": events.now(),
    }


async def test_a_session_belongs_to_its_tenant(engine):
    async with engine.begin() as conn:
        made = await sessions.open_session(conn, ACME, "helper")
    assert (made.tenant_kind, made.tenant_id, made.key_id) == ("customer", "cust_acme", "vk_1")
    async with engine.connect() as conn:
        same = await sessions.get(conn, made.id, sessions.tenant_of(ACME_OTHER_KEY))
        assert same.id == made.id  # every key of the customer sees it
        with pytest.raises(NotFound):
            await sessions.get(conn, made.id, sessions.tenant_of(GLOBEX))
    lone = key("vk_9")
    assert sessions.tenant_of(lone) == ("key", "vk_9")


async def test_events_are_numbered_one_at_a_time_and_written_once(engine):
    async with engine.begin() as conn:
        session_id = (await sessions.open_session(conn, ACME, None)).id

    async def write(n: int) -> int | None:
        async with engine.begin() as conn:
            return await sessions.append(
                conn, session_id, "conversation_event", event(session_id, n)
            )

    seqs = await asyncio.gather(*(write(n) for n in range(40)))
    assert sorted(seqs) == list(range(1, 41))
    again = event(session_id, 99, event_id="evt_twice00000001")
    async with engine.begin() as conn:
        assert await sessions.append(conn, session_id, "conversation_event", again) == 41
    async with engine.begin() as conn:
        assert await sessions.append(conn, session_id, "conversation_event", again) is None
    async with engine.connect() as conn:
        newest = await sessions.events(conn, session_id, None, 5)
    assert [row.seq for row in newest] == [41, 40, 39, 38, 37]
    assert newest[0].body["event_id"] == "evt_twice00000001"


async def test_resuming_after_an_event_reads_what_followed(engine):
    async with engine.begin() as conn:
        session_id = (await sessions.open_session(conn, ACME, None)).id
        written = [event(session_id, n) for n in range(10)]
        for one in written:
            await sessions.append(conn, session_id, "conversation_event", one)
    async with engine.connect() as conn:
        after = await sessions.events(conn, session_id, written[6]["event_id"], 100)
        assert [row.body["message"] for row in after] == ["#7", "#8", "#9"]
        assert await sessions.events(conn, session_id, written[9]["event_id"], 100) == []
        with pytest.raises(NotFound, match="not an event of session"):
            await sessions.events(conn, session_id, "evt_stale0000000", 100)
        with pytest.raises(NotFound):
            await sessions.append(
                conn, "ses_nothing00000", "conversation_event", event("ses_nothing00000")
            )


async def test_every_tenants_sessions_newest_first_by_cursor(engine):
    """The operator's list (the dashboard's): every tenant's, newest first, a page at a
    time; sessions opened in the same instant are ordered by id, none lost or repeated."""
    start = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
    made = []
    async with engine.begin() as conn:
        for n, who in enumerate((ACME, GLOBEX, ACME_OTHER_KEY, GLOBEX, ACME)):
            at = start + timedelta(seconds=n // 2)  # two at a time share their instant
            made.append(await sessions.open_session(conn, who, None, now=at))
    expected = [s.id for s in sorted(made, key=lambda s: (s.created_at, s.id), reverse=True)]
    shown: list[str] = []
    cursor = None
    async with engine.connect() as conn:
        while True:
            rows, cursor = await sessions.recent(conn, limit=2, cursor=cursor)
            shown += [row.id for row in rows]
            if cursor is None:
                break
    assert shown == expected
