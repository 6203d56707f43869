"""``EdgeGuard``: checks on every HTTP request that need nothing but the scope.

- A ``Content-Length`` above ``max_request_body_mb`` is answered 413 at once, before a
  byte of the body is read, with ``Connection: close`` so the server stops reading it.
- A body without ``Content-Length`` (chunked) is counted as it arrives; past the bound
  ``receive`` raises ``PayloadTooLarge``, which the route's error handling answers.
- A NUL byte in the path or query (raw or ``%00``) is a 400: no route, id or filter
  takes one, and Postgres refuses them in text with an error.

Errors are shaped by ``error_response`` (the app's one error-to-response function), so
a refusal here reads exactly like one raised by a route on the same path.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from tollhouse.errors import BadRequest, PayloadTooLarge, TollhouseError

ErrorResponder = Callable[[Request, TollhouseError], Response]

# Set in the scope once the whole body has been read (by ``bodies.read_body``, or here
# for a chunked body): a response sent before then closes the connection instead of
# reading the rest (a lingering close, see ``protocol``).
BODY_DONE = "tollhouse.body_done"
HAS_BODY = "tollhouse.has_body"


class EdgeGuard:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int, respond: ErrorResponder) -> None:
        self._app = app
        self._max = max_body_bytes
        self._respond = respond

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        query: bytes = scope["query_string"]
        # ``find``, not ``in``: ``bytes in bytes`` first tries the operand as an integer
        # and raises and clears a TypeError inside, on every request.
        if "\x00" in scope["path"] or (
            query and (query.find(b"\x00") >= 0 or query.find(b"%00") >= 0)
        ):
            await self._refuse(scope, receive, send, _nul_refusal(scope["path"], query))
            return
        length: bytes | None = None
        chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value
            elif name == b"transfer-encoding":
                chunked = True
        if length is not None:
            # The HTTP parser has checked that it is a number.
            declared = int(length) if length.isdigit() else 0
            if declared > self._max:
                scope[HAS_BODY] = True
                await self._refuse(scope, receive, send, self._too_large())
                return
            if declared == 0:
                await self._app(scope, receive, send)
                return
            # Exactly ``declared`` bytes will arrive: nothing to count. The one body reader
            # (``bodies.read_body``) notes when it has read them.
            scope[HAS_BODY] = True
            await self._app(scope, receive, send)
            return
        if chunked:
            scope[HAS_BODY] = True
            await self._app(scope, _counting(scope, receive, self._max, self._too_large), send)
            return
        await self._app(scope, receive, send)

    def _too_large(self) -> PayloadTooLarge:
        limit_mb = self._max / (1024 * 1024)
        return PayloadTooLarge(
            f"request body is larger than the {limit_mb:g} MB limit (max_request_body_mb)"
        )

    async def _refuse(
        self, scope: Scope, receive: Receive, send: Send, exc: TollhouseError
    ) -> None:
        await self._respond(Request(scope, receive), exc)(scope, receive, send)


def _nul_refusal(path: str, query: bytes) -> BadRequest:
    """The 400 for a NUL byte, naming the query parameter that holds it."""
    if "\x00" in path:
        return BadRequest("NUL byte in the path")
    for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if "\x00" in name or "\x00" in value:
            shown = name.replace("\x00", "\\0")[:64]
            return BadRequest(f"NUL byte in query parameter `{shown}`", param=shown)
    return BadRequest("NUL byte in the query string")


def _counting(
    scope: Scope, receive: Receive, limit: int, too_large: Callable[[], PayloadTooLarge]
) -> Receive:
    received = 0

    async def wrapped() -> Message:
        nonlocal received
        message = await receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise too_large()
            if not message.get("more_body", False):
                scope[BODY_DONE] = True
        return message

    return wrapped


def body_unread(scope: Scope) -> bool:
    """Whether the request has a body that was not received in full."""
    return bool(scope.get(HAS_BODY)) and not scope.get(BODY_DONE)
