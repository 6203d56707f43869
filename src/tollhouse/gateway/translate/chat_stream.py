"""Anthropic Messages stream -> OpenAI ``chat.completion.chunk`` stream.

Anthropic streams typed events around numbered content blocks; OpenAI streams
flat deltas on one choice. The mapping, event by event:

- ``message_start``: the first chunk, ``delta.role = "assistant"``;
- ``content_block_start`` of a ``tool_use`` block: a tool-call delta with the
  call's ``index``, ``id``, ``type`` and ``function.name``, so OpenAI clients
  see the same first-fragment shape OpenAI sends;
- ``text_delta`` / ``input_json_delta``: content / argument fragments;
- ``message_delta`` with a stop reason: the ``finish_reason`` chunk;
- ``error``: an ``{"error": {...}}`` payload, which the OpenAI SDK raises as
  ``APIError`` (there is no chunk form for errors);
- ``content_block_stop`` of a ``tool_use`` block that streamed no input:
  ``"{}"`` as the arguments, since OpenAI clients parse them as JSON;
- ``ping``, other ``content_block_stop``, ``message_stop``, thinking deltas and
  unknown events: nothing (Anthropic may add event types at any time).

With ``include_usage`` the last chunk, from `finish`, has empty ``choices``
and the usage, and every other chunk has ``"usage": null``, as OpenAI does.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from ._utils import as_dict, chat_id, dump_arguments, finish_reason
from .usage import Usage, chat_usage, usage_from_messages

__all__ = ["MessagesStreamToChat"]


class MessagesStreamToChat:
    """Translate one Anthropic SSE stream into OpenAI chunk dicts.

    Feed each event as it arrives, write out what `feed` returns, and call
    `finish` once the upstream stream ends::

        translator = MessagesStreamToChat(model="claude-x", include_usage=True)
        for event, data in upstream_events:
            for chunk in translator.feed(event, data):
                send(chunk)
        for chunk in translator.finish():
            send(chunk)
        meter(translator.usage)
    """

    def __init__(self, *, model: str, include_usage: bool, created: int | None = None) -> None:
        self._model = model
        self._include_usage = include_usage
        # One id and timestamp for every chunk: clients group chunks by them.
        self._created = int(time.time()) if created is None else created
        self._id = f"chatcmpl-{uuid.uuid4().hex}"
        self._raw_usage: dict[str, Any] = {}
        self._tool_indexes: dict[int, int] = {}  # Anthropic block index -> tool_calls index
        self._tools_with_arguments: set[int] = set()  # tool_calls indexes sent any arguments
        self._finish_sent = False
        self._finished = False

    @property
    def usage(self) -> Usage | None:
        """Usage reported so far (cumulative), in OpenAI terms; ``None`` before any."""
        return usage_from_messages(self._raw_usage) if self._raw_usage else None

    def feed(self, event: str, data: dict[str, Any]) -> list[dict[str, Any]]:
        """Translate one Anthropic event into the chunks to send now (often none)."""
        kind = event or data.get("type")
        if kind == "message_start":
            message = as_dict(data.get("message"), "message_start.message")
            if isinstance(message.get("id"), str):
                self._id = chat_id(message["id"])
            self._merge_usage(message.get("usage"))
            return [self._chunk({"role": "assistant", "content": ""})]
        if kind == "content_block_start":
            return self._block_start(data)
        if kind == "content_block_delta":
            return self._block_delta(data)
        if kind == "content_block_stop":
            return self._block_stop(data)
        if kind == "message_delta":
            self._merge_usage(data.get("usage"))
            delta = data.get("delta")
            reason = delta.get("stop_reason") if isinstance(delta, dict) else None
            if reason is None or self._finish_sent:
                return []
            self._finish_sent = True
            return [self._chunk({}, finish_reason=finish_reason(reason))]
        if kind == "error":
            error = data.get("error")
            error = error if isinstance(error, dict) else {}
            text = error.get("message") or "upstream stream error"
            body = {"message": text, "type": error.get("type"), "param": None, "code": None}
            return [{"error": body}]
        return []

    def finish(self) -> list[dict[str, Any]]:
        """Return the closing chunks: the usage chunk when ``include_usage`` was asked."""
        if self._finished or not self._include_usage:
            return []
        self._finished = True
        usage = self.usage or Usage(prompt_tokens=0, completion_tokens=0)
        chunk = self._envelope([])
        chunk["usage"] = chat_usage(usage)
        return [chunk]

    def _block_start(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        block = as_dict(data.get("content_block"), "content_block_start.content_block")
        if block.get("type") == "text":
            text = block.get("text")
            return [self._chunk({"content": text})] if text else []
        if block.get("type") != "tool_use":
            return []
        tool_index = len(self._tool_indexes)
        self._tool_indexes[_index(data)] = tool_index
        arguments = dump_arguments(block["input"]) if block.get("input") else ""
        if arguments:
            self._tools_with_arguments.add(tool_index)
        call = {
            "index": tool_index,
            "id": block.get("id"),
            "type": "function",
            "function": {"name": block.get("name"), "arguments": arguments},
        }
        return [self._chunk({"tool_calls": [call]})]

    def _block_delta(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        delta = as_dict(data.get("delta"), "content_block_delta.delta")
        if delta.get("type") == "text_delta":
            text = delta.get("text")
            return [self._chunk({"content": text})] if text else []
        if delta.get("type") == "input_json_delta":
            tool_index = self._tool_indexes.get(_index(data))
            fragment = delta.get("partial_json")
            if tool_index is None or not fragment:
                return []
            self._tools_with_arguments.add(tool_index)
            call = {"index": tool_index, "function": {"arguments": fragment}}
            return [self._chunk({"tool_calls": [call]})]
        return []

    def _block_stop(self, data: dict[str, Any]) -> list[dict[str, Any]]:
        tool_index = self._tool_indexes.get(_index(data))
        if tool_index is None or tool_index in self._tools_with_arguments:
            return []
        # Anthropic streams no input for a parameterless call; OpenAI clients
        # json.loads() the arguments, so give them the empty object.
        self._tools_with_arguments.add(tool_index)
        call = {"index": tool_index, "function": {"arguments": "{}"}}
        return [self._chunk({"tool_calls": [call]})]

    def _merge_usage(self, usage: object) -> None:
        # Anthropic's counts are cumulative: later values replace earlier ones.
        if isinstance(usage, dict):
            self._raw_usage.update({k: v for k, v in usage.items() if v is not None})

    def _envelope(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            "choices": choices,
        }

    def _chunk(self, delta: dict[str, Any], *, finish_reason: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        chunk = self._envelope([choice])
        if self._include_usage:
            chunk["usage"] = None
        return chunk


def _index(data: dict[str, Any]) -> int:
    index = data.get("index")
    # A malformed index matches no tool block, so the event is skipped, not fatal.
    return index if isinstance(index, int) else -1
