"""The session log's hot writes on the driver (``agents/rawlog.py``) store exactly what
their SQLAlchemy forms store, on SQLite and Postgres: the same row read back the same
way, the same numbering, the same outbox rows and marks, and nothing written for a
session that does not exist."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from tollhouse.agents import outbox, rawlog, sessions
from tollhouse.agents.models import session_events
from tollhouse.bus import events
from tollhouse.db.schema import upgrade
from tollhouse.errors import NotFound

_e = session_events.c


class _Key:
    """What ``open_session`` reads of a key: its scope and chain."""

    class scope:  # an attribute bag shaped like admission's Scope
        kind, id, name = "key", "vk_raw", "raw"

    chain = ()


def message(session_id: str, text: str = "hello") -> dict:
    return {
        "event_id": events.new_event_id(),
        "session_id": session_id,
        "type": "message",
        "key_id": "vk_raw",
        "message": text,
        "metadata": {"ünïcode": "✓"},
        "created_at": events.now(),
    }


async def test_append_stores_what_the_sqlalchemy_form_stores(engine):
    await upgrade(engine)
    async with engine.begin() as conn:
        opened = await sessions.open_session(conn, _Key, None)
    by_core, by_driver = message(opened.id, "core"), message(opened.id, "driver")
    async with engine.begin() as conn:
        first = await sessions.append(conn, opened.id, "conversation_event", by_core, fresh=True)
    second, waiting = await rawlog.append(
        engine, opened.id, "conversation_event", by_driver, waiting_limit=10
    )
    assert (first, second) == (1, 2)
    async with engine.connect() as conn:
        rows = await sessions.after_seq(conn, opened.id, 0, 10)
        expected = await outbox.waiting(conn, opened.id, through=second)
    assert [(r.seq, r.event_id, r.kind, r.type, r.body) for r in rows] == [
        (1, by_core["event_id"], "conversation_event", "message", by_core),
        (2, by_driver["event_id"], "conversation_event", "message", by_driver),
    ]
    # The row's time is the event's own, to the microsecond, read back aware UTC.
    assert rows[1].created_at == datetime.fromisoformat(by_driver["created_at"])
    assert rows[1].created_at.tzinfo is not None
    assert [(w.event_id, w.seq, w.body, w.created_at) for w in waiting] == [
        (e.event_id, e.seq, e.body, e.created_at) for e in expected
    ]

    await rawlog.mark(engine, [by_core["event_id"]])
    async with engine.connect() as conn:
        left = await outbox.waiting(conn, opened.id)
        stamped = await conn.scalar(
            select(_e.published_at).where(_e.event_id == by_core["event_id"])
        )
    assert [w.event_id for w in left] == [by_driver["event_id"]]
    assert stamped is not None and stamped <= datetime.now(UTC)


async def test_an_unknown_session_writes_nothing(engine):
    await upgrade(engine)
    with pytest.raises(NotFound):
        await rawlog.append(engine, "ses_" + "0" * 32, "assistant_event", message("ses_x"))
    async with engine.connect() as conn:
        assert (await conn.execute(select(_e.event_id))).all() == []
