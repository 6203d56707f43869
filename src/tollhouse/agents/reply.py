"""Reading a chat completion stream as the conversation worker gets it from the gateway
(OpenAI's SSE, ``stream_options.include_usage``): the text as it comes, the tool calls
the model asks for (their arguments arrive in fragments, by index), the usage and the
cost the gateway adds to the final chunk."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
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
