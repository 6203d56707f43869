"""The conversation worker: turns a session's messages into model calls made **through
the gateway's own admission, policies, credits and ledger** with the key that sent each
message, and streams the reply into the session's log and onto
``conversation.outbound`` (docs/agents.md, *The conversation worker*).

**Order and concurrency.** The bus hands a session's events to one worker, in order.
The worker keeps reading while a turn runs, so that a ``cancel`` reaches the turn it
stops; messages wait their turn per session (double-texting is ``enqueue``), sessions
run side by side, and a batch is committed once every event in it is handled — so
nothing is acknowledged before it is done, and at most ``_MAX_PENDING`` events are in
hand at once.

**A turn.** The prompt is the session's log (``history.messages``). The call is
``Gateway.handle("chat", …)`` in this process: the same code path as ``/v1/chat/
completions``, so a budget, a credit balance or a policy refuses an agent exactly as it
refuses an application, and every call has its usage record. What one read of the
model's stream brings becomes a ``delta`` event; the whole reply a ``message``; the tool
calls it asks for ``tool_call`` events and requests on ``tool.requests``, whose results
the next step's call answers (up to ``agent_max_steps`` calls); then ``done`` (with the
usage and cost of the turn's calls). A refusal or a provider's failure is an ``error``
event with its code, then ``done``: a turn always ends, never hangs. A ``cancel`` stops
the session's running turn (``cancelled``, then ``done``); the messages queued behind it
still run.

**Idempotence.** Every event the worker writes is logged before it is published, and a
turn whose end (``done``) is already in the log is not run again: a message delivered
twice is answered once. A turn cut short by the worker's death is run again by the next
owner of its partition, from its last step (a step cut mid-stream is asked again; a
tool call without a result is asked for again).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine

from tollhouse.agents import history, rawlog, sessions, tools
from tollhouse.agents.executor import record_result
from tollhouse.agents.feed import SessionFeed
from tollhouse.agents.known import KnownLogs
from tollhouse.agents.reply import ChatStream, Usage
from tollhouse.background import woken
from tollhouse.bus import events
from tollhouse.bus.backends import EventBus, Message, Subscription
from tollhouse.bus.events import INBOUND, OUTBOUND, TOOL_REQUESTS, TOOL_RESULTS
from tollhouse.config import Settings
from tollhouse.errors import TollhouseError
from tollhouse.gateway.context import AgentCall, RequestContext

log = logging.getLogger("tollhouse.agents")
T = TypeVar("T")

GROUP = "conversation"
_MAX_PENDING = 1000  # events fetched and not yet handled, at most
_RECOVER = timedelta(days=1)  # how far back a memory bus's lost messages are looked for


class _Failed(Exception):
    def __init__(self, code: str, text: str) -> None:
        self.code, self.text = code, text


class ConversationWorker:
    def __init__(
        self,
        engine: AsyncEngine,
        bus: EventBus,
        gateway: Any,
        keys: Callable[[str], Awaitable[Any]],
        settings: Settings,
        name: str,
        feed: SessionFeed,
    ) -> None:
        self._engine = engine
        self._feed = feed  # woken when a session's tool results are published
        self._tools = tools.offered(settings)
        self._known = KnownLogs()  # the sessions' histories, while they follow on
        self._bus = bus
        self._gateway = gateway  # tollhouse.gateway.Gateway: handle(endpoint, body, ctx, key)
        self._keys = keys  # key id -> the key as admission knows it now (None: gone)
        self._settings = settings
        self._name = name
        self._subscription: Subscription | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._queues: dict[str, deque[tuple[dict[str, Any], asyncio.Future[None]]]] = {}
        self._drains: dict[str, asyncio.Task[None]] = {}  # session -> its queue's runner
        self._turns: dict[str, asyncio.Task[None]] = {}  # session -> its running turn
        self._stopping = False
        self._writes: set[asyncio.Future[Any]] = set()  # database calls under way
        self._batches: asyncio.Queue[tuple[list[Message], list[asyncio.Future[None]]]] = (
            asyncio.Queue()
        )
        self._pending = asyncio.Semaphore(_MAX_PENDING)

    async def start(self) -> None:
        self._subscription = await self._bus.subscribe(INBOUND, GROUP, self._name)
        # With several server processes each has a memory bus of its own: one cannot
        # tell another's unanswered messages from its own, so none takes any up.
        self._tasks = [
            asyncio.create_task(self._read(), name="tollhouse-agent-reader"),
            asyncio.create_task(self._commit(), name="tollhouse-agent-committer"),
        ]
        if self._bus.name == "memory" and self._settings.workers == 1:
            self._tasks.append(asyncio.create_task(self._recovered(), name="tollhouse-recover"))

    async def _recovered(self) -> None:
        """``_recover``, in the background: a server starts without its database (its
        probes say so), and takes the messages up once the database answers."""
        while True:
            try:
                await self._guarded(self._recover())
                return
            except Exception as exc:
                log.warning("unanswered messages not taken up yet", extra={"error": repr(exc)})
                await asyncio.sleep(1.0)

    async def _recover(self) -> None:
        """The memory bus dies with its process, and what it held with it: the messages
        of the last day still without an answer are taken up again, in order (a turn cut
        short resumes from its last step). The memory bus serves one server process."""
        since = datetime.now(UTC) - _RECOVER
        async with self._engine.connect() as conn:
            pending = await sessions.unanswered(conn, since, _MAX_PENDING)
        for event in pending:
            self._dispatch(event)
        if pending:
            log.warning("unanswered messages taken up again", extra={"count": len(pending)})

    async def stop(self) -> None:
        self._stopping = True  # a turn cut short now is run again elsewhere, not cancelled
        every = [*self._tasks, *self._drains.values(), *self._turns.values()]
        for task in every:
            task.cancel()
        for task in every:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._writes:  # database calls a cancel left running: let them land
            await asyncio.gather(*self._writes, return_exceptions=True)
        if self._subscription is not None:
            with contextlib.suppress(Exception):
                await self._subscription.close()  # what was not committed goes elsewhere

    # -- reading and committing -------------------------------------------------------

    async def _read(self) -> None:
        assert self._subscription is not None
        while True:
            try:
                batch = await self._subscription.fetch(max_count=100, timeout_s=1.0)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("agent worker: fetch failed; retrying")
                await asyncio.sleep(1.0)
                continue
            if not batch:
                continue
            done = []
            for message in batch:
                await self._pending.acquire()
                done.append(self._dispatch(message.event))
            await self._batches.put((batch, done))

    async def _commit(self) -> None:
        assert self._subscription is not None
        while True:
            batch, done = await self._batches.get()
            await asyncio.gather(*done, return_exceptions=True)
            for _ in done:
                self._pending.release()
            try:
                await self._subscription.commit(batch)
            except Exception:  # uncommitted: handed out again, and answered once
                log.exception("agent worker: commit failed")

    def _dispatch(self, event: dict[str, Any]) -> asyncio.Future[None]:
        handled: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        session_id = event["session_id"]
        if event["type"] == "cancel":
            running = self._turns.get(session_id)
            if running is not None and not running.done():
                running.cancel()
            handled.set_result(None)
            return handled
        queue = self._queues.setdefault(session_id, deque())
        queue.append((event, handled))
        if session_id not in self._drains:
            self._drains[session_id] = asyncio.create_task(self._drain(session_id))
        return handled

    async def _drain(self, session_id: str) -> None:
        """Run a session's queued messages one after the other."""
        queue = self._queues[session_id]
        try:
            while queue:
                event, handled = queue.popleft()
                turn = asyncio.create_task(self._turn(event))
                self._turns[session_id] = turn
                try:
                    await turn
                except asyncio.CancelledError:
                    if self._stopping or not turn.cancelled():
                        raise  # the worker stops, not the turn
                    await self._end(event, "cancelled", None)
                except Exception:
                    log.exception("agent turn failed", extra={"session_id": session_id})
                    await self._error(event, "internal_error", "the turn failed; see the logs")
                finally:
                    self._turns.pop(session_id, None)
                    if not handled.done() and not self._stopping:
                        handled.set_result(None)
        finally:
            self._drains.pop(session_id, None)
            self._queues.pop(session_id, None)

    # -- a turn -----------------------------------------------------------------------

    async def _turn(self, event: dict[str, Any]) -> None:
        session_id, turn_id = event["session_id"], event["event_id"]
        log_rows = self._known.history(event)
        if log_rows is None:  # not known to follow on from what this worker saw: read
            log_rows = await self._guarded(self._history(session_id))
        mine = [
            r for r in log_rows if r.kind == "assistant_event" and r.body.get("turn_id") == turn_id
        ]
        if any(r.type == "done" for r in mine):
            return  # answered already: this message was delivered again
        # The key that sent the message pays for its turn (any key of the tenant may
        # write to its sessions); its persona is the message's.
        key_id, persona = event.get("key_id"), event.get("persona_id")
        if key_id is None:  # an event from before messages named their key
            row = await self._guarded(self._row(session_id))
            key_id, persona = row.key_id, persona or row.persona_id
        key = await self._keys(key_id) if key_id else None
        if key is None:
            await self._error(event, "key_unavailable", "the session's key is gone or revoked")
            return
        step, calls = _resume(mine)
        if step is None:  # its last step answered in text and only its end is missing
            await self._end(event, "done", None)
            return
        used = Usage()
        settings = self._settings
        while True:
            if step >= settings.agent_max_steps:  # before its tools: no call would read them
                await self._error(
                    event,
                    "step_limit",
                    f"the turn made {step} model calls: agent_max_steps",
                    used.event(),
                )
                return
            if calls:
                await self._await_results(event, key_id, persona, step - 1, calls)
                log_rows = await self._guarded(self._history(session_id))
            try:
                stream = await self._model(event, key, persona, log_rows, step)
            except _Failed as failed:  # refused, or the provider failed: the turn ends
                await self._error(event, failed.code, failed.text, used.event())
                return
            used.add(stream.usage)
            if stream.text:
                await self._emit(event, "message", text=stream.text, step=step)
            calls = []
            for call in stream.calls.values():
                found = {"call_id": call.id, "tool": call.name, "arguments": call.parsed()}
                await self._emit(event, "tool_call", step=step, **found)
                calls.append(found)
            if not calls:
                await self._end(event, "done", used.event())
                return
            step += 1

    async def _model(
        self, event: dict[str, Any], key: Any, persona: str | None, log_rows: list[Any], step: int
    ) -> ChatStream:
        """One model call of the turn through the gateway, its text streamed as deltas;
        ``_Failed`` when it was refused or failed."""
        settings = self._settings
        body: dict[str, Any] = {
            "model": settings.agent_model,
            "messages": history.messages(
                log_rows, settings.agent_system_prompt, _seq_of(log_rows, event["event_id"])
            ),
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": settings.agent_max_tokens,
        }
        if self._tools:
            body["tools"] = self._tools
        try:
            ctx = RequestContext(agent=AgentCall(event["session_id"], persona))
            reply = await self._gateway.handle("chat", body, ctx, key)
        except TollhouseError as exc:
            raise _Failed(exc.code, exc.message) from None
        stream = ChatStream()
        assert reply.stream is not None
        failed: str | None = None
        try:
            async for data in reply.stream:
                # What one read of the stream brings is one delta: a model's tokens still
                # go out as they come, and a burst costs one write, not one per token.
                text = "".join(stream.feed(data))
                if text:
                    await self._emit(event, "delta", text=text, step=step)
        except TollhouseError as exc:  # the provider failed mid-stream
            failed = exc.message
        finally:
            closer = getattr(reply.stream, "aclose", None)
            if closer is not None:
                await closer()
        failed = failed or stream.failed
        if failed is not None:
            raise _Failed("upstream_error", failed)
        return stream

    async def _await_results(
        self,
        event: dict[str, Any],
        key_id: str,
        persona: str | None,
        step: int,
        calls: list[dict[str, Any]],
    ) -> None:
        """Ask the tool executor for the calls without a result, then wait for their
        results (woken by ``tool.results``, and checking the log each second); a call
        still without one after ``agent_tool_timeout_s`` is answered ``timeout``."""
        session_id = event["session_id"]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.agent_tool_timeout_s
        wake = self._feed.watch(session_id)
        asked = False
        try:
            while True:
                wake.clear()
                answered = await self._guarded(self._answered(session_id))
                missing = [c for c in calls if c["call_id"] not in answered]
                if not missing:
                    return
                if not asked:
                    for call in missing:
                        await self._bus.publish(
                            TOOL_REQUESTS,
                            {
                                "event_id": events.new_event_id(),
                                "session_id": session_id,
                                "key_id": key_id,
                                "persona_id": persona,
                                "step": step,
                                **call,
                                "created_at": events.now(),
                            },
                        )
                    asked = True
                left = deadline - loop.time()
                if left <= 0:
                    for call in missing:
                        await self._guarded(self._timed_out(session_id, call))
                    return
                await woken(wake, min(left, 1.0))
        finally:
            self._feed.unwatch(session_id, wake)

    async def _answered(self, session_id: str) -> set[str]:
        async with self._engine.connect() as conn:
            return await sessions.answered_calls(conn, session_id)

    async def _timed_out(self, session_id: str, call: dict[str, Any]) -> None:
        timeout = self._settings.agent_tool_timeout_s
        result = {
            "event_id": events.new_event_id(),
            "session_id": session_id,
            "call_id": call["call_id"],
            "tool": call["tool"],
            "ok": False,
            "error": f"timeout: no result within {timeout:g}s (agent_tool_timeout_s)",
            "created_at": events.now(),
        }
        seq = await record_result(self._engine, result)
        if seq is not None:
            self._known.saw(result, "tool_result", seq)
            await self._bus.publish(TOOL_RESULTS, {**result, "seq": seq})

    async def _history(self, session_id: str) -> list[Any]:
        async with self._engine.connect() as conn:
            rows = await sessions.history(conn, session_id)
        self._known.read(session_id, rows)
        return rows

    async def _row(self, session_id: str) -> Any:
        async with self._engine.connect() as conn:
            return await sessions.row(conn, session_id)

    async def _error(
        self, event: dict[str, Any], code: str, text: str, usage: dict[str, Any] | None = None
    ) -> None:
        await self._emit(event, "error", code=code[:64], text=text)
        await self._end(event, "done", usage)

    async def _end(self, event: dict[str, Any], kind: str, usage: dict[str, Any] | None) -> None:
        extra: dict[str, Any] = {"usage": usage} if usage else {}
        if kind == "cancelled":
            await self._emit(event, "cancelled")
            kind = "done"
        await self._emit(event, kind, **extra)

    async def _emit(self, cause: dict[str, Any], kind: str, **fields: Any) -> None:
        """Log an assistant event of the turn, then publish it."""
        event = {
            "event_id": events.new_event_id(),
            "session_id": cause["session_id"],
            "type": kind,
            "turn_id": cause["event_id"],
            **fields,
            "created_at": events.now(),
        }
        events.validate(OUTBOUND, event)
        # Shielded: a cancel (of the turn, or of the worker) never cuts a write in half,
        # which on SQLite would leave the write lock to a connection being torn down;
        # ``stop`` waits for the writes a cancel left running.
        await self._guarded(self._record(event))

    async def _guarded(self, work: Coroutine[Any, Any, T]) -> T:
        """``work`` (a database call) run to its end even when the caller is cancelled:
        a query cut off on aiosqlite finishes in its thread after the loop is gone."""
        task = asyncio.ensure_future(work)
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)
        return await asyncio.shield(task)

    async def _record(self, event: dict[str, Any]) -> None:
        written, _ = await rawlog.append(
            self._engine, event["session_id"], "assistant_event", event
        )
        self._known.saw(event, "assistant_event", written)
        await self._bus.publish(OUTBOUND, {**event, "seq": written})


def _resume(mine: list[Any]) -> tuple[int | None, list[dict[str, Any]]]:
    """Where a turn picks up from its own events in the log: the next step and the
    calls of the last one (they may still need their results). ``None``: its last step
    answered in text, and only its end is missing. A fresh turn starts at step 0."""
    called = [r.body for r in mine if r.type == "tool_call"]
    if not called:
        return (None, []) if any(r.type == "message" for r in mine) else (0, [])
    last = max(int(c.get("step", 0)) for c in called)
    if any(r.type == "message" and int(r.body.get("step", 0)) > last for r in mine):
        return None, []
    calls = [
        {"call_id": c["call_id"], "tool": c["tool"], "arguments": c.get("arguments") or {}}
        for c in called
        if int(c.get("step", 0)) == last
    ]
    return last + 1, calls


def _seq_of(rows: list[Any], event_id: str) -> int | None:
    return next((r.seq for r in rows if r.event_id == event_id), None)
