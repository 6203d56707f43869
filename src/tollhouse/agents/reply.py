"""Reading a chat completion stream as the conversation worker gets it from the gateway
(OpenAI's SSE, ``stream_options.include_usage``): the text as it comes, the tool calls
the model asks for (their arguments arrive in fragments, by index), the usage and the
cost the gateway adds to the final chunk."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any


@dataclass(slots=True)
class Call:
    id: str = ""
    name: str = ""
    arguments: str = ""

    def parsed(self) -> dict[str, Any]:
        """Its arguments as an object (a model's broken JSON is kept as text)."""
        try:
            value = json.loads(self.arguments or "{}")
        except ValueError:
            return {"_raw": self.arguments}
        return value if isinstance(value, dict) else {"_value": value}


@dataclass(slots=True)
class ChatStream:
    text: str = ""
    calls: dict[int, Call] = field(default_factory=dict)
    usage: dict[str, Any] | None = None
    finish: str | None = None
    _buffer: bytes = b""

    @property
    def failed(self) -> str | None:
        """Why the stream is not a whole reply (``None``: it is)."""
        return None if self.finish is not None else "the model's stream ended before its end"

    def feed(self, data: bytes) -> Iterator[str]:
        """Take bytes of the stream; yield each piece of text as it completes."""
        self._buffer += data
        while b"\n\n" in self._buffer:
            frame, self._buffer = self._buffer.split(b"\n\n", 1)
            for line in frame.split(b"\n"):
                if not line.startswith(b"data:"):
                    continue
                payload = line[5:].strip()
                if payload == b"[DONE]" or not payload:
                    continue
                piece = self._chunk(json.loads(payload))
                if piece:
                    yield piece

    def _chunk(self, chunk: dict[str, Any]) -> str:
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.usage = usage
        piece = ""
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if isinstance(content, str):
                piece += content
            for call in delta.get("tool_calls") or ():
                found = self.calls.setdefault(int(call.get("index", 0)), Call())
                found.id = call.get("id") or found.id
                function = call.get("function") or {}
                found.name = function.get("name") or found.name
                found.arguments += function.get("arguments") or ""
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]
        self.text += piece
        return piece


@dataclass(slots=True)
class Usage:
    """What the model calls of one turn used, all steps together."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: Decimal | None = None
    calls: int = 0

    def add(self, usage: dict[str, Any] | None) -> None:
        self.calls += 1
        if not usage:
            return
        for name in ("prompt_tokens", "completion_tokens"):
            value = usage.get(name)
            if isinstance(value, int):
                setattr(self, name, getattr(self, name) + value)
        if usage.get("cost") is not None:
            self.cost = (self.cost or Decimal(0)) + Decimal(str(usage["cost"]))

    def event(self) -> dict[str, Any] | None:
        """The ``usage`` of the turn's ``done`` event."""
        if not self.calls:
            return None
        found: dict[str, Any] = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
        }
        if self.cost is not None:
            found["cost"] = str(self.cost)
        return found
