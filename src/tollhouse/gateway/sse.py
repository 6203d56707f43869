"""Server-sent events: an incremental decoder for upstream streams and an encoder.

Upstream bytes arrive cut anywhere; the decoder hands back whole events, each with its
original bytes so a pass-through stream forwards exactly what the provider sent.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson


@dataclass(frozen=True, slots=True)
class Event:
    event: str | None
    data: bytes
    raw: bytes


class SSEDecoder:
    def __init__(self) -> None:
        self._buffer = b""
        self._pending_cr = False

    def feed(self, chunk: bytes) -> list[Event]:
        """Events completed by ``chunk``, in order."""
        if self._pending_cr:
            chunk, self._pending_cr = b"\r" + chunk, False
        if b"\r" in chunk:
            # A CR at the very end may be the first half of a CRLF split across chunks.
            if chunk.endswith(b"\r"):
                chunk, self._pending_cr = chunk[:-1], True
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        self._buffer += chunk
        events: list[Event] = []
        while True:
            end = self._buffer.find(b"\n\n")
            if end < 0:
                return events
            block, self._buffer = self._buffer[:end], self._buffer[end + 2 :]
            event = _parse(block)
            if event is not None:
                events.append(event)

    def close(self) -> list[Event]:
        """A last event left without its blank line when the stream ended."""
        if self._pending_cr:
            self._buffer, self._pending_cr = self._buffer + b"\n", False
        block, self._buffer = self._buffer.strip(b"\n"), b""
        event = _parse(block) if block else None
        return [event] if event is not None else []


def _parse(block: bytes) -> Event | None:
    name: str | None = None
    data: list[bytes] = []
    for line in block.split(b"\n"):
        if not line or line.startswith(b":"):
            continue
        field, _, value = line.partition(b":")
        if value.startswith(b" "):
            value = value[1:]
        if field == b"data":
            data.append(value)
        elif field == b"event":
            name = value.decode("utf-8", "replace")
    if not data and name is None:
        return None
    return Event(name, b"\n".join(data), block + b"\n\n")


def encode(data: object, event: str | None = None) -> bytes:
    """One SSE event carrying ``data`` as JSON."""
    body = b"data: " + orjson.dumps(data) + b"\n\n"
    return b"event: " + event.encode() + b"\n" + body if event else body


DONE = b"data: [DONE]\n\n"
