"""The session API applications call with a virtual key (docs/agents.md, *API*):
``POST /v1/session/message`` (a new session, or a message to one the key's tenant owns),
``GET /v1/session/{id}/events`` (newest first, or what followed ``?after=``) and
``POST /v1/session/{id}/cancel``. A message and a cancel are written to the session's
log and then published on ``conversation.inbound`` for the conversation worker; messages
sent while a reply is under way wait their turn (the bus keeps a session's events in
order: double-texting is ``enqueue``).

The log is the outbox of that publication (``outbox.py``): once the event is committed
the request answers 200 whether or not the bus took it. A failed publish is logged and
left to the redrive; a 5xx would tell the client to send again, and the retry would be a
second message, not the same one.

Every route first checks that the session is the caller's tenant's with ``owned``
(``cache.py``): from Redis when the session is cached there, else from the database.
"""

from __future__ import annotations

from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route, WebSocketRoute

from tollhouse.agents import outbox, rawlog, sessions
from tollhouse.agents.cache import SessionCache, SessionMeta, owned
from tollhouse.agents.schemas import Accepted, EventPage, EventRead, EventsQuery, MessageBody
from tollhouse.agents.stream import stream
from tollhouse.bus import events
from tollhouse.bus.backends import EventBus
from tollhouse.db.writes import writing
from tollhouse.errors import AuthenticationFailed
from tollhouse.web.responses import JSONResponse
from tollhouse.web.validation import read_model


class Authenticator(Protocol):
    def authenticate(self, headers: Any) -> Any: ...


class AgentServices(Protocol):
    """What these routes use of the running service (``web/services.py``)."""

    @property
    def engine(self) -> AsyncEngine: ...

    @property
    def admission(self) -> Authenticator: ...

    @property
    def bus(self) -> EventBus: ...

    @property
    def session_cache(self) -> SessionCache: ...


def _services(request: Request) -> AgentServices:
    services: AgentServices = request.app.services
    return services


def _key(request: Request) -> Any:
    key = _services(request).admission.authenticate(request.headers)
    if key is None:  # anonymous access never reaches a session: it has no tenant
        raise AuthenticationFailed("sessions need a virtual key (Authorization: Bearer th-…)")
    return key


async def post_message(request: Request) -> Response:
    key = _key(request)
    body = await read_model(request, MessageBody)
    services = _services(request)
    known: SessionMeta | None = None
    if body.session_id is not None:  # the tenant's, or a 404 before anything is written
        known = await owned(services, body.session_id, sessions.tenant_of(key))
    event: dict[str, Any] = {
        "event_id": events.new_event_id(),
        "session_id": "",
        "type": "message",
        "key_id": key.scope.id,
        "message": body.message,
        "created_at": events.now(),
    }
    if body.attachments:
        event["attachments"] = [a.given() for a in body.attachments]
    if body.metadata:
        event["metadata"] = dict(body.metadata)
    if known is None:  # a new session, opened in the transaction that logs its message
        async with writing(services.engine) as conn:
            session = SessionMeta.of(await sessions.open_session(conn, key, body.persona_id))
            event |= {"session_id": session.id, "persona_id": body.persona_id}
            waiting = await _write(conn, event)
    else:
        session = known
        event |= {"session_id": session.id, "persona_id": body.persona_id or session.persona_id}
        # A cached session the database lacks (one restored from a backup) is a 404
        # here: ``append`` finds no row to number the event, and nothing is written.
        waiting = await _log(services.engine, event)
    if known is None:  # opened and committed: cached for the requests that follow
        await services.session_cache.put(session)
    await outbox.deliver(services.engine, services.bus, waiting)
    return JSONResponse(Accepted(session_id=session.id, event_id=event["event_id"]))


async def _log(engine: AsyncEngine, event: dict[str, Any]) -> list[Any]:
    """``_write`` for a session that exists, in a transaction of its own (the hot path:
    on the driver, ``rawlog``)."""
    events.validate(events.INBOUND, event)
    _, waiting = await rawlog.append(
        engine, event["session_id"], "conversation_event", event, waiting_limit=outbox.BATCH
    )
    return waiting


async def _write(conn: AsyncConnection, event: dict[str, Any]) -> list[Any]:
    """Log a client's event; what of its session is to be published now, by seq: the
    event and any older one still waiting (so that it does not overtake them)."""
    # Checked before it is written: an event the bus would refuse must not wait in the
    # outbox for ever after a 200.
    events.validate(events.INBOUND, event)
    seq = await sessions.append(conn, event["session_id"], "conversation_event", event, fresh=True)
    return await outbox.waiting(conn, event["session_id"], through=seq)


async def list_events(request: Request) -> Response:
    key = _key(request)
    q = EventsQuery.parse(request.query_params)
    session_id = request.path_params["id"]
    services = _services(request)
    await owned(services, session_id, sessions.tenant_of(key))
    async with services.engine.connect() as conn:
        rows = await sessions.events(conn, session_id, q.after, q.limit)
    items = [
        EventRead(
            seq=row.seq,
            event_id=row.event_id,
            kind=row.kind,
            type=row.type,
            event=row.body,
            created_at=row.created_at,
        )
        for row in rows
    ]
    return JSONResponse(EventPage(session_id=session_id, events=items, count=len(items)))


async def cancel(request: Request) -> Response:
    key = _key(request)
    session_id = request.path_params["id"]
    services = _services(request)
    await owned(services, session_id, sessions.tenant_of(key))
    event = {
        "event_id": events.new_event_id(),
        "session_id": session_id,
        "type": "cancel",
        "key_id": key.scope.id,
        "created_at": events.now(),
    }
    waiting = await _log(services.engine, event)
    await outbox.deliver(services.engine, services.bus, waiting)
    return JSONResponse(Accepted(session_id=session_id, event_id=event["event_id"]))


routes: list[BaseRoute] = [
    Route("/v1/session/message", post_message, methods=["POST"]),
    WebSocketRoute("/v1/session/{id}/stream", stream),
    Route("/v1/session/{id}/events", list_events, methods=["GET"]),
    Route("/v1/session/{id}/cancel", cancel, methods=["POST"]),
]
