"""How a server learns that a session's log grew: every server follows the three topics
that carry a session's logged events (``conversation.inbound``,
``conversation.outbound``, ``tool.results``) as a listener of its own
(``SessionListener``), and wakes whatever watches the session here (``SessionFeed``):
its WebSocket streams, and a turn waiting for its tool results.

An event is published after it is logged, carrying its log ``seq``. A watcher is handed
the frame the stream would have read from the log, so a stream sends a live event
without reading the log again. It still reads the log whenever the frames it was handed
do not follow on from what it sent — one lost, one out of order, one published without
its seq, a watcher too slow to keep up: the log stays the truth, the frames a shortcut.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections import deque
from datetime import datetime
from typing import Any

from tollhouse.agents.sessions import type_of
from tollhouse.bus.backends import EventBus, Subscription
from tollhouse.bus.events import INBOUND, OUTBOUND, TOOL_RESULTS, TOPICS
from tollhouse.web.responses import rfc3339

log = logging.getLogger("tollhouse.agents")

_KEPT = 1000  # frames a watcher holds before it is told to read the log instead
LISTENED = (INBOUND, OUTBOUND, TOOL_RESULTS)  # every topic of logged events


class Watch(asyncio.Event):
    """Set when the session's log grew; ``frames`` holds the events handed over since
    the watcher last took them, ``lost`` says some were not (read the log)."""

    def __init__(self) -> None:
        super().__init__()
        self.frames: deque[dict[str, Any]] = deque()
        self.lost = False


class SessionFeed:
    def __init__(self) -> None:
        self._waiting: dict[str, set[Watch]] = {}

    def watch(self, session_id: str) -> Watch:
        watch = Watch()
        self._waiting.setdefault(session_id, set()).add(watch)
        return watch

    def unwatch(self, session_id: str, watch: Watch) -> None:
        waiting = self._waiting.get(session_id)
        if waiting is not None:
            waiting.discard(watch)
            if not waiting:
                del self._waiting[session_id]

    def notify(self, session_id: str, frame: dict[str, Any] | None = None) -> None:
        """Wake the session's watchers, handing them ``frame`` (``None``: an event they
        must read from the log)."""
        for watch in self._waiting.get(session_id, ()):
            if frame is None or len(watch.frames) >= _KEPT:
                watch.lost = True
                watch.frames.clear()
            else:
                watch.frames.append(frame)
            watch.set()


def frame(
    seq: int, event_id: str, kind: str, type_: str, body: dict[str, Any], created_at: datetime
) -> dict[str, Any]:
    """What a stream sends of one event of the log, read from it or handed over live."""
    return {
        "seq": seq,
        "event_id": event_id,
        "kind": kind,
        "type": type_,
        "event": body,
        "created_at": rfc3339(created_at),
    }


def frame_of(topic: str, event: dict[str, Any]) -> dict[str, Any] | None:
    """The frame of a published event, or ``None`` for one published without its seq
    (the row's time is the event's own: ``sessions.append``)."""
    seq = event.get("seq")
    if not isinstance(seq, int):
        return None
    body = {k: v for k, v in event.items() if k != "seq"}
    kind = TOPICS[topic]
    at = datetime.fromisoformat(body["created_at"])
    return frame(seq, body["event_id"], kind, type_of(kind, body), body, at)


class SessionListener:
    """This server's listener on the topics of logged events: wakes the feed."""

    def __init__(
        self, bus: EventBus, feed: SessionFeed, topics: tuple[str, ...] = LISTENED
    ) -> None:
        self._bus = bus
        self._feed = feed
        self._topics = topics
        self._group = f"streams-{uuid.uuid4().hex[:12]}"
        self._tasks: list[asyncio.Task[None]] = []
        self._subscriptions: list[Subscription] = []

    async def start(self) -> None:
        for n, topic in enumerate(self._topics):
            subscription = await self._bus.subscribe(
                topic, f"{self._group}-{n}", "listener", listener=True
            )
            self._subscriptions.append(subscription)
            self._tasks.append(
                asyncio.create_task(
                    self._listen(topic, subscription), name=f"tollhouse-{topic}-listener"
                )
            )

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for subscription in self._subscriptions:
            with contextlib.suppress(Exception):
                await subscription.close()

    async def _listen(self, topic: str, subscription: Subscription) -> None:
        while True:
            try:
                batch = await subscription.fetch(max_count=500, timeout_s=5.0)
                for message in batch:
                    self._feed.notify(message.key, frame_of(topic, message.event))
                await subscription.commit(batch)
            except asyncio.CancelledError:
                raise
            except Exception:  # the bus is away: streams still catch up on their heartbeat
                log.exception("session listener failed; retrying")
                await asyncio.sleep(1.0)
