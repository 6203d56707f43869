"""Agent sessions: every tenant's sessions, newest first, and one session's events with
a live stream of what follows (docs/agents.md, *Streaming*), read through
``agents.sessions`` and followed through the server's session feed.

The stream is Server-Sent Events rather than the WebSocket clients use: the browser's
``EventSource`` sends the dashboard's cookie (the ``@page`` gate admits it like any
page), reconnects on its own and resumes by sending the last ``id:`` it received as
``Last-Event-ID``. Each event's ``id:`` is its log ``event_id``, so a resumed stream
starts with exactly what followed: the log after that event, then the live frames, by
``seq`` (``agents.stream.due``), never one twice. A heartbeat comment keeps proxies from
closing a quiet stream and makes the stream look at the log once in case a wake-up was
missed.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from tollhouse.agents import sessions
from tollhouse.agents.feed import frame
from tollhouse.agents.stream import StreamServices, due
from tollhouse.background import woken
from tollhouse.dashboard.access import Visitor
from tollhouse.dashboard.pages import names, page, query_without
from tollhouse.dashboard.render import PAGE_HEADERS, html

PAGE_SIZE = 50
SHOWN_EVENTS = 200  # the newest of a session's log on its page; the stream goes on from there
RETRY_MS = 1000  # how soon EventSource reconnects after the stream ends
SUMMARY = 300  # characters of an event's text shown in its row


class LiveServices(StreamServices, Protocol):
    """What the event stream uses: the WebSocket stream's services, and whether the
    server is shutting down (``ops``' readiness reads it too)."""

    @property
    def draining(self) -> bool: ...


def _services(request: Request) -> LiveServices:
    found: LiveServices = request.app.services
    return found


@page
async def session_list(request: Request, who: Visitor) -> Response:
    async with _services(request).engine.connect() as conn:
        rows, cursor = await sessions.recent(
            conn, limit=PAGE_SIZE, cursor=request.query_params.get("cursor") or None
        )
    context = {
        "title": "Agent sessions",
        "nav": "sessions",
        "sessions": rows,
        "names": names(request),
        "next_query": query_without(request, "cursor", cursor=cursor) if cursor else None,
    }
    return html(request, "sessions.html", context, who)


@page
async def session_page(request: Request, who: Visitor) -> Response:
    session_id = request.path_params["id"]
    async with _services(request).engine.connect() as conn:
        session = await sessions.row(conn, session_id)  # the operator sees every tenant's
        newest = await sessions.events(conn, session_id, None, SHOWN_EVENTS)
    rows = [row_of(frame(r.seq, r.event_id, r.kind, r.type, r.body, r.created_at))
            for r in reversed(newest)]  # fmt: skip
    context = {
        "title": f"Session {session_id}",
        "nav": "sessions",
        "session": session,
        "events": rows,
        "earlier": bool(rows) and rows[0]["seq"] > 1,
        "after": rows[-1]["event_id"] if rows else "",
        "names": names(request),
    }
    return html(request, "session.html", context, who)


@page
async def session_stream(request: Request, who: Visitor) -> Response:
    """``text/event-stream`` of the session's events after ``Last-Event-ID`` (what
    ``EventSource`` sends when it reconnects), else after ``?after=`` (the last event the
    page showed), else from now."""
    services = _services(request)
    session_id = request.path_params["id"]
    anchor = request.headers.get("last-event-id") or request.query_params.get("after")
    async with services.engine.connect() as conn:
        await sessions.row(conn, session_id)  # a 404 before the stream starts
        if anchor:
            last = await sessions.seq_of(conn, session_id, anchor)
        else:
            last = await sessions.last_seq(conn, session_id)
    headers = {**PAGE_HEADERS, "x-accel-buffering": "no"}  # nginx: pass each event at once
    return StreamingResponse(
        _events(services, session_id, last), media_type="text/event-stream", headers=headers
    )


async def _events(services: LiveServices, session_id: str, last: int) -> AsyncIterator[str]:
    """The log after ``last``, then what follows as it is written, until the client goes
    (Starlette cancels this on disconnect) or the server drains (the browser reconnects,
    to whichever server answers, and resumes)."""
    feed = services.session_feed
    wake = feed.watch(session_id)
    wake.lost = True  # the first pass reads the log: what followed the anchor
    heartbeat = services.settings.session_heartbeat_s
    try:
        yield f"retry: {RETRY_MS}\n\n"
        while not services.draining:
            wake.clear()
            async for found in due(services.engine, session_id, last, wake):
                yield _sse(found)
                last = found["seq"]
            if not await woken(wake, heartbeat):
                wake.lost = True  # quiet for a while: look at the log once
                yield f": heartbeat {last}\n\n"
    finally:
        feed.unwatch(session_id, wake)


def _sse(found: dict[str, Any]) -> str:
    data = json.dumps(row_of(found), separators=(",", ":"))  # one line: no "\n" in JSON
    return f"id: {found['event_id']}\ndata: {data}\n\n"


def row_of(found: dict[str, Any]) -> dict[str, Any]:
    """What a row of the page shows of a frame: the same whether the page drew it or the
    stream appended it (``static/app.js``)."""
    return {
        "seq": found["seq"],
        "event_id": found["event_id"],
        "kind": found["kind"],
        "type": found["type"],
        "created_at": found["created_at"],
        "summary": summary(found["kind"], found["type"], found["event"]),
    }


def summary(kind: str, type_: str, event: dict[str, Any]) -> str:
    """One line about an event, for people: its text, the tool and its arguments, the
    result's output, the turn's usage."""
    if kind == "tool_result":
        ok = "ok" if event.get("ok") else "failed"
        said = event.get("output") or event.get("error") or ""
        text = f"{event.get('tool', '')} {ok}: {said}"
    elif type_ == "tool_call":
        text = f"{event.get('tool', '')}({json.dumps(event.get('arguments', {}))})"
    elif type_ == "done":
        usage = event.get("usage") or {}
        text = ", ".join(f"{k} {v}" for k, v in usage.items())
    else:
        text = str(event.get("message") or event.get("text") or event.get("error") or "")
    return text if len(text) <= SUMMARY else text[:SUMMARY] + "…"
