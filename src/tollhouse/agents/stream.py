"""``WS /v1/session/{id}/stream``: a session's events as they are written, resumable
without gaps or duplicates (docs/agents.md, *Streaming*).

The session's log is the truth; the socket only carries it. On connect the stream
starts after the event the client names (``?after=`` or ``Last-Event-ID``; none: from
now), sends what the log holds after it, then waits to be woken and sends what followed,
always by the log's ``seq``: a reconnecting client resumes exactly where it stopped,
and two wake-ups for one event send it once.

The server's listener (``feed.py``) wakes the stream when the session's events are
published, whichever process wrote them, handing it their frames: a live event is sent
without reading the log again, unless the frames do not follow on from the last one
sent, when the log is read. A quiet stream sends a heartbeat every
``session_heartbeat_s`` (and checks the log, in case a wake-up was missed).

Close codes: **4001** the key is missing, unknown or inactive, **4004** the session (or
the event to resume after) is not this tenant's — both final, retrying cannot help;
anything else (1001 going away, 1011 an error, 1012 a restart) may be retried with the
last event id received.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from tollhouse.agents import sessions
from tollhouse.agents.cache import SessionCache, owned
from tollhouse.agents.feed import SessionFeed, Watch, frame
from tollhouse.background import woken
from tollhouse.errors import NotFound, TollhouseError

log = logging.getLogger("tollhouse.agents")

CLOSE_AUTH = 4001
CLOSE_UNKNOWN = 4004
_PAGE = 500


class StreamServices(Protocol):
    @property
    def engine(self) -> AsyncEngine: ...

    @property
    def admission(self) -> Any: ...

    @property
    def session_feed(self) -> SessionFeed: ...

    @property
    def session_cache(self) -> SessionCache: ...

    @property
    def settings(self) -> Any: ...


async def stream(websocket: WebSocket) -> None:
    services: StreamServices = websocket.app.services
    session_id = websocket.path_params["id"]
    await websocket.accept()
    try:
        key = services.admission.authenticate(websocket.headers)
    except TollhouseError as exc:
        await websocket.close(CLOSE_AUTH, exc.message[:120])
        return
    if key is None:
        await websocket.close(CLOSE_AUTH, "sessions need a virtual key")
        return
    anchor = websocket.query_params.get("after") or websocket.headers.get("last-event-id")
    try:
        await owned(services, session_id, sessions.tenant_of(key))
        async with services.engine.connect() as conn:
            if anchor is None:
                last = await sessions.last_seq(conn, session_id)
            else:
                last = await sessions.seq_of(conn, session_id, anchor)
    except NotFound as exc:
        await websocket.close(CLOSE_UNKNOWN, exc.message[:120])
        return
    feed = services.session_feed
    wake = feed.watch(session_id)
    wake.lost = True  # the first pass reads the log: what followed the anchor
    gone = asyncio.create_task(_until_disconnect(websocket))
    heartbeat = services.settings.session_heartbeat_s
    try:
        while not gone.done():
            wake.clear()
            last = await _send(websocket, services.engine, session_id, last, wake)
            if not await woken(wake, heartbeat) and not gone.done():
                wake.lost = True  # quiet for a while: look at the log once
                await websocket.send_json({"type": "heartbeat", "after_seq": last})
    except (WebSocketDisconnect, RuntimeError):
        pass  # the client went: disconnect is not cancel, the session goes on
    finally:
        feed.unwatch(session_id, wake)
        gone.cancel()
        if websocket.application_state == WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await websocket.close(1000)


async def _send(
    websocket: WebSocket, engine: AsyncEngine, session_id: str, last: int, wake: Watch
) -> int:
    async for found in due(engine, session_id, last, wake):
        await websocket.send_json(found)
        last = found["seq"]
    return last


async def due(
    engine: AsyncEngine, session_id: str, last: int, wake: Watch
) -> AsyncIterator[dict[str, Any]]:
    """The frames to send after ``last``: those handed over while they follow on from
    it, read from the log when they do not (or were not all handed over). Shared by
    every stream of the log (this WebSocket, the dashboard's event stream)."""
    while wake.frames and not wake.lost:
        handed = wake.frames.popleft()
        if handed["seq"] <= last:
            continue  # sent already (read from the log)
        if handed["seq"] != last + 1:
            wake.lost = True  # one before it has not come this way (yet)
            break
        yield handed
        last = handed["seq"]
    if not wake.lost:
        return
    wake.lost = False
    wake.frames.clear()
    while True:
        async with engine.connect() as conn:  # not held while a frame is sent
            rows = await sessions.after_seq(conn, session_id, last, _PAGE)
        for row in rows:
            yield frame(row.seq, row.event_id, row.kind, row.type, row.body, row.created_at)
            last = row.seq
        if len(rows) < _PAGE:
            return


async def _until_disconnect(websocket: WebSocket) -> None:
    """Reads (and drops) what the client sends, until it goes."""
    with contextlib.suppress(Exception):
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
