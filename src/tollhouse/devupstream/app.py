"""The dev upstream as one raw ASGI callable: routing, auth, faults, streaming.

Routing is a dict lookup on the exact path, because the server sits under load tests
and must cost less than the gateway it measures. Per request, in order: count it,
check the key (401), parse and validate (400), resolve faults (``state.Plan``), wait
the latency, then answer, fail, or stream.
"""

from __future__ import annotations

import asyncio
import hmac
import time
from collections.abc import Callable
from typing import Any

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from . import anthropic_api, openai_api
from .asgi import SSE_HEADERS, ClientGone, DisconnectWatch, pause, read_body, send_bytes
from .errors import BadRequest, InjectedDisconnect, WireFormat, error_body, openai_error
from .frames import IdSource, Outcome, StreamBody
from .options import DevUpstreamOptions
from .state import Plan, Scenarios, ScenarioSpec, Stats

Handler = Callable[[object, IdSource, int], Outcome]

_INFERENCE: dict[str, tuple[Handler, WireFormat]] = {
    "/v1/chat/completions": (openai_api.chat_completions, WireFormat.OPENAI),
    "/v1/embeddings": (openai_api.embeddings, WireFormat.OPENAI),
    "/v1/messages": (anthropic_api.messages, WireFormat.ANTHROPIC),
}
_KNOWN_SUFFIXES = ("/chat/completions", "/embeddings", "/messages", "/models")
_HEALTH_BODY = b'{"status":"ok"}'


def create_app(options: DevUpstreamOptions | None = None) -> ASGIApp:
    """A fresh dev upstream with its own counters and scenario queue.

    ``create_app()`` for in-process tests (``httpx.ASGITransport(app=...)``);
    ``serve(options)`` to run it on a port.
    """
    return DevUpstreamApp(options or DevUpstreamOptions())


class DevUpstreamApp:
    """ASGI callable; state lives here so two instances never share faults."""

    def __init__(self, options: DevUpstreamOptions) -> None:
        self.options = options
        self.stats = Stats()
        self.scenarios = Scenarios()
        self.ids = IdSource()
        self._key = options.api_key.encode() if options.api_key is not None else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            try:
                await self._http(scope, receive, send)
            except ClientGone:
                return
        elif scope["type"] == "lifespan":
            await _lifespan(receive, send)
        else:
            await send({"type": "websocket.close", "code": 1003})

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        if path.startswith("/_dev/"):
            await self._control(path, scope["method"], receive, send)
            return
        if path == "/health":
            await send_bytes(send, 200, _HEALTH_BODY, [])
            return
        self.stats.requests += 1
        self.stats.by_path[path] = self.stats.by_path.get(path, 0) + 1
        self.stats.in_flight += 1
        try:
            await self._api(path, scope, receive, send)
        finally:
            self.stats.in_flight -= 1

    async def _api(self, path: str, scope: Scope, receive: Receive, send: Send) -> None:
        route = _INFERENCE.get(path)
        wire = route[1] if route is not None else WireFormat.OPENAI
        expected = "POST" if route is not None else "GET"
        headers = self._headers(wire)
        if route is None and path != "/v1/models":
            hint = ""
            if path.startswith("/v1/v1/"):
                hint = f"; did you mean {path[3:]}? (an Anthropic base URL has no /v1)"
            elif not path.startswith("/v1/") and path.endswith(_KNOWN_SUFFIXES):
                hint = f"; did you mean /v1{path}? (an OpenAI base URL ends in /v1)"
            await self._reject(send, wire, 404, f"Unknown path {path}{hint}", headers)
        elif scope["method"] != expected:
            message = f"Method {scope['method']} not allowed on {path}; use {expected}"
            await self._reject(send, wire, 405, message, headers)
        elif not self._authorized(scope):
            message = "invalid x-api-key" if wire is WireFormat.ANTHROPIC else "Incorrect API key"
            await self._reject(send, wire, 401, message, headers)
        elif route is None:
            await pause(self.options.latency_ms)
            anthropic = any(name == b"anthropic-version" for name, _ in scope["headers"])
            body = anthropic_api.MODELS_BODY if anthropic else openai_api.MODELS_BODY
            await send_bytes(send, 200, body, headers)
            self.stats.completed += 1
        else:
            await self._inference(route[0], wire, receive, send, headers)

    async def _inference(
        self,
        handler: Handler,
        wire: WireFormat,
        receive: Receive,
        send: Send,
        headers: list[tuple[bytes, bytes]],
    ) -> None:
        raw = await read_body(receive)
        try:
            outcome = handler(orjson.loads(raw), self.ids, int(time.time()))
        except orjson.JSONDecodeError:
            message = "We could not parse the JSON body of your request."
            await self._reject(send, wire, 400, message, headers)
            return
        except BadRequest as exc:
            await self._reject(send, wire, 400, exc.message, headers, exc.param)
            return
        self.stats.inference_requests += 1
        streaming = isinstance(outcome, StreamBody)
        plan = self.scenarios.plan(self.options, self.stats.inference_requests, streaming)
        if plan.fail_status is not None:
            self.stats.failed_injected += 1
            status = plan.fail_status
            if status == 429:
                headers = [*headers, (b"retry-after", b"0")]
            await pause(plan.latency_ms)
            message = f"Injected failure: status {status} from tollhouse dev-upstream"
            await send_bytes(send, status, error_body(wire, status, message), headers)
        elif isinstance(outcome, StreamBody):
            await self._stream(outcome, plan, receive, send, headers)
        else:
            await pause(plan.latency_ms)
            await send_bytes(send, 200, outcome.body, headers)
            self.stats.completed += 1

    async def _stream(
        self,
        body: StreamBody,
        plan: Plan,
        receive: Receive,
        send: Send,
        headers: list[tuple[bytes, bytes]],
    ) -> None:
        """Send head, paced content, tail; count a client hang-up as ``cancelled``."""
        watch = DisconnectWatch(receive)
        drop = plan.disconnect_after_chunks
        try:
            await pause(plan.latency_ms)
            start = {"type": "http.response.start", "status": 200, "headers": SSE_HEADERS + headers}
            await send(start)
            await send({"type": "http.response.body", "body": body.head, "more_body": True})
            for index, frame in enumerate(body.content):
                if index == drop:
                    break
                await pause(plan.chunk_delay_ms)
                await send({"type": "http.response.body", "body": frame, "more_body": True})
            if drop is not None:
                raise InjectedDisconnect(f"dropped after {min(drop, len(body.content))} chunks")
            watch.finish()
            await send({"type": "http.response.body", "body": body.tail, "more_body": False})
            self.stats.completed += 1
        except asyncio.CancelledError:
            if not watch.client_left:
                raise
            watch.absorb()
            self.stats.cancelled += 1
        except InjectedDisconnect:
            self.stats.disconnected_injected += 1
            raise
        finally:
            await watch.stop()

    async def _control(self, path: str, method: str, receive: Receive, send: Send) -> None:
        """``/_dev/*``: test controls; never counted, delayed or failed."""
        reply: dict[str, Any]
        if (path, method) == ("/_dev/stats", "GET"):
            reply = self.stats.as_json()
        elif (path, method) == ("/_dev/scenario", "GET"):
            reply = {"pending": self.scenarios.as_json()}
        elif (path, method) == ("/_dev/scenario", "POST"):
            try:
                spec = ScenarioSpec.parse(orjson.loads(await read_body(receive)))
            except (orjson.JSONDecodeError, BadRequest) as exc:
                message = exc.message if isinstance(exc, BadRequest) else "invalid JSON"
                await send_bytes(send, 400, openai_error(400, message), [])
                return
            self.scenarios.add(spec)
            reply = {"pending": self.scenarios.as_json()}
        elif (path, method) == ("/_dev/reset", "POST"):
            self.stats = Stats(in_flight=self.stats.in_flight)
            self.scenarios.clear()
            reply = {"status": "reset"}
        else:
            message = f"Unknown control endpoint {method} {path}"
            await send_bytes(send, 404, openai_error(404, message), [])
            return
        await send_bytes(send, 200, orjson.dumps(reply), [])

    def _authorized(self, scope: Scope) -> bool:
        if self._key is None:
            return True
        for name, value in scope["headers"]:
            if name == b"authorization" and value[:7].lower() == b"bearer ":
                token = value[7:].strip()
            elif name == b"x-api-key":
                token = value.strip()
            else:
                continue
            if hmac.compare_digest(token, self._key):
                return True
        return False

    def _headers(self, wire: WireFormat) -> list[tuple[bytes, bytes]]:
        request_id = self.ids.make("req_").encode()
        if wire is WireFormat.ANTHROPIC:
            return [(b"x-request-id", request_id), (b"request-id", request_id)]
        return [(b"x-request-id", request_id)]

    async def _reject(
        self,
        send: Send,
        wire: WireFormat,
        status: int,
        message: str,
        headers: list[tuple[bytes, bytes]],
        param: str | None = None,
    ) -> None:
        """A 4xx the client earned: counted as ``rejected``, still delayed by latency."""
        self.stats.rejected += 1
        await pause(self.options.latency_ms)
        await send_bytes(send, status, error_body(wire, status, message, param), headers)


async def _lifespan(receive: Receive, send: Send) -> None:
    """Answer startup and shutdown so uvicorn does not log "lifespan unsupported"."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
