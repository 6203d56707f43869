"""OpenAI ``chat.completion.chunk`` stream -> Anthropic Messages stream.

OpenAI deltas carry no block structure, so this class builds it: the first
chunk produces ``message_start`` (input tokens 0, since OpenAI reports usage
only at the end); the first content opens a text block; each new tool-call
``index`` closes the open block and opens a ``tool_use`` block; argument
fragments become ``input_json_delta``. OpenAI sends ``finish_reason`` and
usage in separate chunks, so ``message_delta`` and ``message_stop`` wait for
`finish`. Blocks are opened and closed in order, as Anthropic clients expect;
a fragment for an already-closed call (OpenAI does not interleave calls, but
a compatible server might) is still sent, against that call's block index.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from ._utils import as_optional_list, message_id, stop_reason
from .usage import Usage, messages_usage, usage_from_chat

__all__ = ["ChatStreamToMessages"]

Event = tuple[str, dict[str, Any]]


@dataclass
class _ToolCall:
    id: str | None = None
    name: str | None = None
    block: int | None = None  # Anthropic block index once opened
    pending: str = ""  # argument fragments that arrived before the name


class ChatStreamToMessages:
    """Translate one OpenAI chunk stream into Anthropic ``(event, data)`` pairs.

    Feed each parsed chunk (not the ``[DONE]`` sentinel), send what `feed`
    returns, then call `finish` when the upstream stream ends::

        translator = ChatStreamToMessages(model="gpt-x")
        for chunk in upstream_chunks:
            for event, data in translator.feed(chunk):
                send(event, data)
        for event, data in translator.finish():
            send(event, data)
    """

    def __init__(self, *, model: str) -> None:
        self._model = model
        self._id = f"msg_{uuid.uuid4().hex}"
        self._started = False
        self._done = False
        self._next_block = 0
        self._open_block: int | None = None
        self._text_block: int | None = None  # open text block, if the open one is text
        self._tools: dict[int, _ToolCall] = {}
        self._stop_reason: str | None = None
        self._usage: Usage | None = None

    @property
    def usage(self) -> Usage | None:
        """Usage from the upstream's usage chunk, in OpenAI terms; ``None`` before it."""
        return self._usage

    def feed(self, chunk: dict[str, Any]) -> list[Event]:
        """Translate one OpenAI chunk into the events to send now (often none)."""
        if self._done:
            return []
        error = chunk.get("error")
        if error is not None and not chunk.get("choices"):
            # Anthropic streams report mid-stream failures as an "error" event.
            self._done = True
            message = error.get("message") if isinstance(error, dict) else str(error)
            body = {"type": "api_error", "message": message or "upstream stream error"}
            return [("error", {"type": "error", "error": body})]
        events = self._start(chunk)
        usage = usage_from_chat(chunk.get("usage"))
        if usage is not None:
            self._usage = usage
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            for key in ("content", "refusal"):
                if isinstance(delta.get(key), str) and delta[key]:
                    events += self._text(delta[key])
            for position, call in enumerate(
                as_optional_list(delta.get("tool_calls"), "tool_calls")
            ):
                events += self._tool_fragment(call, position)
            if choice.get("finish_reason"):
                self._stop_reason = stop_reason(choice["finish_reason"])
        return events

    def finish(self) -> list[Event]:
        """Close open blocks and end the message with its stop reason and usage."""
        if self._done:
            return []
        events = self._start({})
        for call in self._tools.values():
            if call.block is None:
                # A call whose name never arrived still deserves its block.
                call.name = ""
                events += self._open_tool(call, call.pending)
        events += self._close()
        reason = self._stop_reason or "end_turn"
        if reason == "end_turn" and self._tools:
            # Some servers end tool calls with "stop"; Anthropic clients key off "tool_use".
            reason = "tool_use"
        usage = messages_usage(self._usage) if self._usage else {"output_tokens": 0}
        delta = {"stop_reason": reason, "stop_sequence": None}
        events.append(("message_delta", {"type": "message_delta", "delta": delta, "usage": usage}))
        events.append(("message_stop", {"type": "message_stop"}))
        self._done = True
        return events

    def _start(self, chunk: dict[str, Any]) -> list[Event]:
        if self._started:
            return []
        self._started = True
        if isinstance(chunk.get("id"), str) and chunk["id"]:
            self._id = message_id(chunk["id"])
        usage = usage_from_chat(chunk.get("usage"))
        start_usage = messages_usage(usage) if usage else {"input_tokens": 0, "output_tokens": 0}
        start_usage["output_tokens"] = 0
        message: dict[str, Any] = {
            "id": self._id,
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": start_usage,
        }
        return [("message_start", {"type": "message_start", "message": message})]

    def _text(self, text: str) -> list[Event]:
        events: list[Event] = []
        if self._text_block is None:
            events += self._close()
            self._text_block = self._open_new()
            events.append(_block_start(self._text_block, {"type": "text", "text": ""}))
        delta = {"type": "text_delta", "text": text}
        events.append(_block_delta(self._text_block, delta))
        return events

    def _tool_fragment(self, raw: object, position: int) -> list[Event]:
        call_delta = raw if isinstance(raw, dict) else {}
        index = call_delta.get("index", position)
        call = self._tools.setdefault(index if isinstance(index, int) else position, _ToolCall())
        function = call_delta.get("function") or {}
        if call.id is None and call_delta.get("id"):
            call.id = str(call_delta["id"])
        if call.name is None and function.get("name"):
            call.name = str(function["name"])
        arguments = function.get("arguments") or ""
        if call.block is None:
            if call.name is None:
                call.pending += arguments
                return []
            return self._open_tool(call, call.pending + arguments)
        return [_block_delta(call.block, _json_delta(arguments))] if arguments else []

    def _open_tool(self, call: _ToolCall, arguments: str) -> list[Event]:
        events = self._close()
        call.block = self._open_new()
        call.pending = ""
        call_id = call.id or f"toolu_{self._id.removeprefix('msg_')}_{call.block}"
        block = {"type": "tool_use", "id": call_id, "name": call.name or "", "input": {}}
        events.append(_block_start(call.block, block))
        if arguments:
            events.append(_block_delta(call.block, _json_delta(arguments)))
        return events

    def _open_new(self) -> int:
        index = self._open_block = self._next_block
        self._next_block += 1
        return index

    def _close(self) -> list[Event]:
        if self._open_block is None:
            return []
        index, self._open_block, self._text_block = self._open_block, None, None
        return [("content_block_stop", {"type": "content_block_stop", "index": index})]


def _block_start(index: int, block: dict[str, Any]) -> Event:
    data = {"type": "content_block_start", "index": index, "content_block": block}
    return ("content_block_start", data)


def _block_delta(index: int, delta: dict[str, Any]) -> Event:
    return ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})


def _json_delta(fragment: str) -> dict[str, Any]:
    return {"type": "input_json_delta", "partial_json": fragment}
