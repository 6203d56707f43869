"""uvicorn's httptools protocol with the limits a public HTTP server needs.

uvicorn bounds neither the size of a request's head nor the time a client may take to
send it or its body, so one client dripping a byte a second holds a connection (and the
memory of what it sent) for as long as it likes. This protocol adds:

- ``header_timeout_s``: a connection that has not sent a complete request head within it
  (from connecting, or from the first byte of the next request) gets 408 and is closed;
- ``max_header_bytes``: a head still incomplete past it gets 431 and is closed;
- ``body_timeout_s``: a body not received in full within it closes the connection (the
  route reading it sees the client gone).

Timers are armed only when a read leaves a head or body incomplete, so the common
request, whole in one read, costs nothing here.

A response sent before its request's body was read (401 without a key, 413 by
``Content-Length``) closes the connection. Closing at once, with the client still
sending, makes the kernel answer with a reset that destroys the response before the
client reads it: most HTTP clients send the whole body before reading. So the close
lingers, as nginx's does: the write side is shut, and what the client still sends is
read and dropped (never parsed, never kept) until it stops, for at most ``LINGER_S``
seconds and ``LINGER_MAX_BYTES``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("tollhouse")

_REASONS = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}
LINGER_S = 5.0
LINGER_MAX_BYTES = 256 * 1024 * 1024


def _closing() -> bool:
    return True


class _LingeringTransport:
    """The transport uvicorn sees: ``close()`` asks the protocol, which may linger."""

    def __init__(self, transport: asyncio.Transport, protocol: GuardedHttpToolsProtocol) -> None:
        self._transport = transport
        self._protocol = protocol
        self._closing = False
        # Bound once: uvicorn calls these per response, and ``__getattr__`` is the slow path.
        self.write = transport.write
        self.get_extra_info = transport.get_extra_info
        self.pause_reading = transport.pause_reading
        self.resume_reading = transport.resume_reading

        self.is_closing = transport.is_closing  # until ``close``: then always true

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            self.is_closing = _closing
            self._protocol._close_requested()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    # Set per server by ``server.server_config`` on a subclass.
    max_header_bytes = 64 * 1024
    header_timeout_s = 10.0
    body_timeout_s = 60.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True
        self._in_body = False
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._raw: asyncio.Transport | None = None
        self._lingered: int | None = None  # bytes dropped while lingering, once it does

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._raw = transport
        super().connection_made(_LingeringTransport(transport, self))  # type: ignore[arg-type]
        # A connection that never sends a request is closed too.
        self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_timed_out)

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._lingered is not None:
            self._lingered += len(data)
            if self._lingered > LINGER_MAX_BYTES and self._raw is not None:
                self._raw.close()
            return
        if self._in_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self.transport.is_closing():
            return
        if self._in_head:
            if self._head_bytes > self.max_header_bytes:
                self._refuse(431, f"request head larger than {self.max_header_bytes} bytes")
            elif self._head_timer is None:
                self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_timed_out)
        elif self._in_body and self._body_timer is None:
            self._body_timer = self.loop.call_later(self.body_timeout_s, self._body_timed_out)

    def on_headers_complete(self) -> None:
        self._in_head, self._in_body = False, True
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_head, self._in_body, self._head_bytes = True, False, 0
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        super().on_message_complete()

    def _close_requested(self) -> None:
        raw = self._raw
        if raw is None or raw.is_closing():
            return
        if not self._in_body or not raw.can_write_eof():
            raw.close()
            return
        self._cancel_timers()
        self._lingered = 0
        # The response is complete on the client's side; the client's own end of sending
        # (EOF) then closes the transport, as ``eof_received`` returns nothing.
        raw.write_eof()
        raw.resume_reading()  # flow control may have paused it while the body waited
        self.loop.call_later(LINGER_S, raw.close)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._head_bytes:
            self._refuse(408, f"request head not received within {self.header_timeout_s:g}s")
        elif not self.transport.is_closing() and self._idle():
            self.transport.close()  # connected, never asked anything

    def _body_timed_out(self) -> None:
        self._body_timer = None
        log.warning(
            "closing a connection: request body not received within %gs", self.body_timeout_s
        )
        self.transport.close()

    def _idle(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def _refuse(self, status: int, message: str) -> None:
        self._cancel_timers()
        if self.transport.is_closing():
            return
        if self._idle():
            # No response is in progress on this connection, so one can be written raw.
            body = message.encode("ascii")
            self.transport.write(
                b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\n"
                b"content-length: %d\r\nconnection: close\r\n\r\n%s"
                % (status, _REASONS[status], len(body), body)
            )
        log.warning("closing a connection: %s", message)
        self.transport.close()

    def _cancel_timers(self) -> None:
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = None
