"""``WS /v1/session/{id}/stream`` against a real server: a session's events in order as
they are written, resumed after the last one received without gaps or duplicates,
heartbeats when quiet; 4001 for a bad key and 4004 for another tenant's session or an
unknown anchor, both final. The worker's part (write the event, publish it) is played
by the test on the server's own loop."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest
import websockets
from tests.support import LiveServer

from tollhouse.agents import sessions
from tollhouse.bus import events


@pytest.fixture
def live(make_settings):
    # The test plays the worker: the server runs none of its own.
    settings = make_settings(session_heartbeat_s=0.3, agent_worker_in_process=False)
    with LiveServer(settings) as server:
        yield server


def admin(live: LiveServer, path: str, body: dict) -> dict:
    response = httpx.post(f"{live.url}/api/governance/{path}", json=body)
    assert response.status_code in (200, 201), response.text
    return response.json()


def new_key(live: LiveServer, customer: str) -> str:
    owner = admin(live, "customers", {"name": customer})["customer"]["id"]
    made = admin(live, "virtual-keys", {"name": f"{customer}-key", "customer_id": owner})
    return str(made["virtual_key"]["value"])


def open_session(live: LiveServer, key: str) -> str:
    sent = httpx.post(
        f"{live.url}/v1/session/message",
        json={"message": "Calculate 2 + 2"},
        headers={"authorization": f"Bearer {key}"},
    )
    assert sent.status_code == 200, sent.text
    return str(sent.json()["session_id"])


async def reply(live: LiveServer, session_id: str, text: str) -> str:
    """What the conversation worker does with a delta: log it, then publish it."""
    event = {
        "event_id": events.new_event_id(),
        "session_id": session_id,
        "type": "delta",
        "text": text,
        "created_at": events.now(),
    }

    async def on_server() -> None:
        services = live.app.services
        async with services.engine.begin() as conn:
            await sessions.append(conn, session_id, "assistant_event", event)
        await services.bus.publish("conversation.outbound", event)

    assert live.loop is not None
    await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(on_server(), live.loop))
    return event["event_id"]


def ws_url(live: LiveServer, session_id: str, query: str = "") -> str:
    return f"ws://127.0.0.1:{live.port}/v1/session/{session_id}/stream{query}"


async def received(ws) -> dict:
    async with asyncio.timeout(5):
        return dict(json.loads(await ws.recv()))


async def next_event(ws) -> dict:
    while True:
        frame = await received(ws)
        if frame.get("type") != "heartbeat":
            return frame


async def test_events_stream_in_order_and_resume_without_gaps(live):
    key = new_key(live, "acme")
    session_id = open_session(live, key)
    headers = {"authorization": f"Bearer {key}"}
    async with websockets.connect(ws_url(live, session_id), additional_headers=headers) as ws:
        sent = [await reply(live, session_id, t) for t in ("The", " answer", " is")]
        got = [await next_event(ws) for _ in range(3)]
    assert [f["event"]["text"] for f in got] == ["The", " answer", " is"]
    assert [f["event_id"] for f in got] == sent and got[0]["seq"] == 2  # after the message
    # Disconnected: the reply goes on; resuming after the last one received misses nothing.
    later = [await reply(live, session_id, t) for t in (" 4", ".")]
    query = f"?after={got[-1]['event_id']}"
    async with websockets.connect(
        ws_url(live, session_id, query), additional_headers=headers
    ) as ws:
        resumed = [await next_event(ws) for _ in range(2)]
        assert [f["event_id"] for f in resumed] == later
        heartbeat = await received(ws)
        assert heartbeat == {"type": "heartbeat", "after_seq": resumed[-1]["seq"]}
    # Last-Event-ID works the same, from the first of the reply.
    with_header = {**headers, "last-event-id": got[0]["event_id"]}
    async with websockets.connect(ws_url(live, session_id), additional_headers=with_header) as ws:
        again = [await next_event(ws) for _ in range(4)]
    assert [f["event"]["text"] for f in again] == [" answer", " is", " 4", "."]


@pytest.mark.parametrize("case", ["no-key", "wrong-key", "other-tenant", "stale-anchor"])
async def test_final_close_codes(live, case):
    key = new_key(live, "acme")
    session_id = open_session(live, key)
    headers = {"authorization": f"Bearer {key}"}
    query = ""
    if case == "no-key":
        headers = {}
    elif case == "wrong-key":
        headers = {"authorization": "Bearer th-" + "x" * 40}
    elif case == "other-tenant":
        headers = {"authorization": f"Bearer {new_key(live, 'globex')}"}
    else:
        query = "?after=evt_stale000000000"
    async with websockets.connect(
        ws_url(live, session_id, query), additional_headers=headers
    ) as ws:
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await received(ws)
    expected = 4001 if case in ("no-key", "wrong-key") else 4004
    assert closed.value.rcvd is not None and closed.value.rcvd.code == expected
