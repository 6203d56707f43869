"""``WS /v1/session/{id}/stream``: a session's events as they are written, resumable
without gaps or duplicates (docs/agents.md, *Streaming*).

The session's log is the truth; the socket only carries it. On connect the stream
starts after the event the client names (``?after=`` or ``Last-Event-ID``; none: from
now), sends what the log holds after it, then waits to be woken and sends what followed,
always by the log's ``seq``: a reconnecting client resumes exactly where it stopped,
and two wake-ups for one event send it once.

Every server follows ``conversation.outbound`` and ``tool.results`` as a listener of
its own (``OutboundListener``): whichever process the workers run in, the streams of a
session on this server (and a turn waiting there for its tool results) are woken when
its events are published. A quiet stream sends a
heartbeat every ``session_heartbeat_s``.

Close codes: **4001** the key is missing, unknown or inactive, **4004** the session (or
the event to resume after) is not this tenant's — both final, retrying cannot help;
anything else (1001 going away, 1011 an error, 1012 a restart) may be retried with the
last event id received.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from tollhouse.agents import sessions
from tollhouse.agents.cache import SessionCache, owned
from tollhouse.background import woken
from tollhouse.bus.backends import EventBus, Subscription
from tollhouse.bus.events import OUTBOUND, TOOL_RESULTS
from tollhouse.errors import NotFound, TollhouseError
from tollhouse.web.responses import rfc3339

log = logging.getLogger("tollhouse.agents")

CLOSE_AUTH = 4001
CLOSE_UNKNOWN = 4004
_PAGE = 500


class SessionFeed:
    """Wakes the streams of a session when its log grows."""

    def __init__(self) -> None:
        self._waiting: dict[str, set[asyncio.Event]] = {}

    def watch(self, session_id: str) -> asyncio.Event:
        event = asyncio.Event()
        self._waiting.setdefault(session_id, set()).add(event)
        return event

    def unwatch(self, session_id: str, event: asyncio.Event) -> None:
        waiting = self._waiting.get(session_id)
        if waiting is not None:
            waiting.discard(event)
            if not waiting:
                del self._waiting[session_id]

    def notify(self, session_id: str) -> None:
        for event in self._waiting.get(session_id, ()):
            event.set()


class OutboundListener:
    """This server's listener on ``conversation.outbound`` and ``tool.results``: wakes
    the feed of each session an event is published for."""

    def __init__(self, bus: EventBus, feed: SessionFeed) -> None:
        self._bus = bus
        self._feed = feed
        self._group = f"streams-{uuid.uuid4().hex[:12]}"
        self._tasks: list[asyncio.Task[None]] = []
        self._subscriptions: list[Subscription] = []

    async def start(self) -> None:
        for n, topic in enumerate((OUTBOUND, TOOL_RESULTS)):
            subscription = await self._bus.subscribe(
                topic, f"{self._group}-{n}", "listener", listener=True
            )
            self._subscriptions.append(subscription)
            self._tasks.append(
                asyncio.create_task(self._listen(subscription), name=f"tollhouse-{topic}-listener")
            )

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for subscription in self._subscriptions:
            with contextlib.suppress(Exception):
                await subscription.close()

    async def _listen(self, subscription: Subscription) -> None:
        while True:
            try:
                batch = await subscription.fetch(max_count=500, timeout_s=5.0)
                for message in batch:
                    self._feed.notify(message.key)
                await subscription.commit(batch)
            except asyncio.CancelledError:
                raise
            except Exception:  # the bus is away: streams still catch up on their heartbeat
                log.exception("session listener failed; retrying")
                await asyncio.sleep(1.0)


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
    gone = asyncio.create_task(_until_disconnect(websocket))
    heartbeat = services.settings.session_heartbeat_s
    try:
        while not gone.done():
            wake.clear()
            last = await _send_after(websocket, services.engine, session_id, last)
            if not await woken(wake, heartbeat) and not gone.done():
                await websocket.send_json({"type": "heartbeat", "after_seq": last})
    except (WebSocketDisconnect, RuntimeError):
        pass  # the client went: disconnect is not cancel, the session goes on
    finally:
        feed.unwatch(session_id, wake)
        gone.cancel()
        if websocket.application_state == WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await websocket.close(1000)


async def _send_after(websocket: WebSocket, engine: AsyncEngine, session_id: str, last: int) -> int:
    while True:
        async with engine.connect() as conn:
            rows = await sessions.after_seq(conn, session_id, last, _PAGE)
        for row in rows:
            await websocket.send_json(
                {
                    "seq": row.seq,
                    "event_id": row.event_id,
                    "kind": row.kind,
                    "type": row.type,
                    "event": row.body,
                    "created_at": rfc3339(row.created_at),
                }
            )
            last = row.seq
        if len(rows) < _PAGE:
            return last


async def _until_disconnect(websocket: WebSocket) -> None:
    """Reads (and drops) what the client sends, until it goes."""
    with contextlib.suppress(Exception):
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                return
