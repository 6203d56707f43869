"""The tool executor (``tollhouse worker --role tools``, or in every ``serve`` process
with ``agent_worker_in_process``): runs the tool calls the conversation worker publishes
on ``tool.requests`` and answers each with a ``tool_result`` (docs/agents.md, *Tools*).

For each request, in this order:

1. **Once.** A call whose result is already in the session's log is not run again (the
   request was delivered twice); its result is published again, in case the first
   publish was lost.
2. **Who.** The session's key as admission knows it now: a key revoked since the
   message was sent runs nothing.
3. **Policy.** The ``tool.execute`` decision for that key, with the call as the
   document's ``request`` (tool, arguments, session, persona) and what it would use as
   ``resource`` (the hosts of ``http_get``, the sandbox backend of ``python``/``shell``).
4. **Run** (``tools.Toolbox``), then the result is logged and published on
   ``tool.results``, which wakes the turn waiting for it and the session's streams.

A denied, unknown, failed or broken call is a result with ``ok: false`` and the reason:
the turn waiting for it always gets an answer. Requests of one batch run side by side
(bounded); the batch is committed once every one of them has its result logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from tollhouse.agents import sessions
from tollhouse.agents.tools import SANDBOXED, Result, Toolbox, hosts
from tollhouse.bus import events
from tollhouse.bus.backends import EventBus, Subscription
from tollhouse.bus.events import TOOL_REQUESTS, TOOL_RESULTS
from tollhouse.db.writes import writing
from tollhouse.errors import NotFound
from tollhouse.policies.document import tool_request, tool_resource
from tollhouse.policies.gate import PolicyGate

log = logging.getLogger("tollhouse.agents")

GROUP = "tools"
_PARALLEL = 16  # calls of one batch run at once
_OUTPUT_CHARS = 1_000_000  # what a result carries of a tool's output (the schema's bound)


class ToolExecutor:
    def __init__(
        self,
        engine: AsyncEngine,
        bus: EventBus,
        policies: PolicyGate,
        toolbox: Toolbox,
        keys: Callable[[str], Awaitable[Any]],
        name: str,
    ) -> None:
        self._engine = engine
        self._bus = bus
        self._policies = policies
        self._toolbox = toolbox
        self._keys = keys  # key id -> the key as admission knows it now (None: gone)
        self._name = name
        self._subscription: Subscription | None = None
        self._task: asyncio.Task[None] | None = None
        self._parallel = asyncio.Semaphore(_PARALLEL)
        self.handled = 0

    async def start(self) -> None:
        self._subscription = await self._bus.subscribe(TOOL_REQUESTS, GROUP, self._name)
        self._task = asyncio.create_task(self._run(), name="tollhouse-tool-executor")

    async def stop(self) -> None:
        """Stop between batches' calls: a batch cut short is not committed, so its calls
        go to another executor (which runs only those without a result)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._subscription is not None:
            with contextlib.suppress(Exception):
                await self._subscription.close()
        await self._toolbox.close()

    async def _run(self) -> None:
        assert self._subscription is not None
        while True:
            try:
                batch = await self._subscription.fetch(max_count=_PARALLEL, timeout_s=1.0)
                if batch:
                    await asyncio.gather(*(self._guarded(m.event) for m in batch))
                    await self._subscription.commit(batch)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("tool executor: fetch or commit failed; retrying")
                await asyncio.sleep(1.0)

    async def _guarded(self, request: dict[str, Any]) -> None:
        async with self._parallel:
            try:
                await self.handle(request)
            except NotFound:  # the session is gone: nobody waits for the result
                log.warning("tool call of an unknown session", extra=_ids(request))

    async def handle(self, request: dict[str, Any]) -> None:
        """One ``tool_request``: its result logged and published (once)."""
        session_id, call_id = request["session_id"], request["call_id"]
        async with self._engine.connect() as conn:
            row = await sessions.row(conn, session_id)
            earlier = await sessions.result_of(conn, session_id, call_id)
        if earlier is not None:
            await self._bus.publish(TOOL_RESULTS, earlier)
            return
        # The persona of the message the call answers (the session's, for a request
        # from before requests named it).
        persona = request.get("persona_id") or row.persona_id or ""
        result = await self._outcome(request, persona)
        event: dict[str, Any] = {
            "event_id": events.new_event_id(),
            "session_id": session_id,
            "call_id": call_id,
            "tool": request["tool"],
            "ok": result.ok,
            "output": result.output[:_OUTPUT_CHARS],
            "exit_code": result.exit_code,
            "duration_ms": result.duration_ms,
            "created_at": events.now(),
        }
        if result.error:
            event["error"] = result.error[:4000]
        events.validate(TOOL_RESULTS, event)
        # Shielded: a stop never leaves a result half written (or the SQLite lock held).
        written = await asyncio.shield(record_result(self._engine, event))
        if written is not None:
            self.handled += 1
            await self._bus.publish(TOOL_RESULTS, {**event, "seq": written})

    async def _outcome(self, request: dict[str, Any], persona: str) -> Result:
        tool, arguments = request["tool"], request["arguments"]
        if not self._toolbox.enabled(tool):
            return Result(False, error=f"unknown_tool: {tool!r} is not offered here")
        key = await self._keys(request["key_id"]) if request.get("key_id") else None
        if key is None:
            return Result(False, error="key_unavailable: the session's key is gone or revoked")
        who = self._policies.who(key)
        decision = await self._policies.decide(
            "tool.execute",
            who,
            tool_request(
                tool=tool, arguments=arguments, session=request["session_id"], persona=persona
            ),
            tool_resource(
                tool=tool,
                hosts=hosts(tool, arguments),
                sandbox="local" if tool in SANDBOXED else "",
            ),
        )
        if not decision.allowed:
            return Result(False, error=f"policy_denied: {decision.reason} (decision {decision.id})")
        try:
            return await self._toolbox.run(tool, arguments, request["session_id"], who)
        except Exception as exc:  # a tool's own failure is its result, never silence
            log.exception("tool failed", extra=_ids(request))
            return Result(False, error=f"internal_error: {type(exc).__name__}")


async def record_result(engine: AsyncEngine, event: dict[str, Any]) -> int | None:
    """Log a call's result: its seq (``None``: it had one already)."""
    async with writing(engine) as conn:
        return await sessions.append_result(conn, event)


def _ids(request: dict[str, Any]) -> dict[str, Any]:
    return {"session_id": request.get("session_id"), "call_id": request.get("call_id")}
