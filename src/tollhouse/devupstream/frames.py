"""Response values the wire modules hand to the app: a JSON body or a stream plan.

A stream is rendered up front as ``head`` (sent with the first byte), ``content`` (one
frame per token, paced and countable) and ``tail`` (final chunk, usage, terminator).
The app then only decides timing and faults, the same way for both wire formats.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class JsonBody:
    """A complete non-streaming response body."""

    body: bytes


@dataclass(frozen=True)
class StreamBody:
    """A server-sent event stream split where faults and pacing apply."""

    head: bytes
    content: tuple[bytes, ...]
    tail: bytes


Outcome = JsonBody | StreamBody


class IdSource:
    """Unique response ids without a syscall per request: random prefix + counter."""

    def __init__(self) -> None:
        self._prefix = os.urandom(6).hex()
        self._counter = itertools.count(1)

    def make(self, prefix: str) -> str:
        return f"{prefix}{self._prefix}{next(self._counter):012x}"


def sse_data(payload: bytes) -> bytes:
    """An OpenAI-style event: ``data: {...}`` and a blank line."""
    return b"data: " + payload + b"\n\n"


def sse_event(name: bytes, payload: bytes) -> bytes:
    """An Anthropic-style event: ``event: name``, ``data: {...}`` and a blank line."""
    return b"event: " + name + b"\ndata: " + payload + b"\n\n"
