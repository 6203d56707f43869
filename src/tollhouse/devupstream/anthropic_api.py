"""Anthropic Messages wire format: plain, streamed (the real event sequence), tool use.

The stream is ``message_start``, ``content_block_start``, ``ping``, one
``content_block_delta`` per token (``text_delta``, or ``input_json_delta`` for
``tool_use``), ``content_block_stop``, ``message_delta`` (stop reason and the final
``output_tokens``), ``message_stop`` — the order the official SDK's accumulator expects.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from .content import Reply, ToolSpec, asks_for_tool, choose_tool, compose, content_text
from .errors import BadRequest
from .frames import IdSource, JsonBody, Outcome, StreamBody, sse_event
from .openai_api import MODEL_IDS
from .validation import as_object, optional_int, required_messages, required_model

MODELS_BODY = orjson.dumps(
    {
        "data": [
            {"type": "model", "id": m, "display_name": m, "created_at": "2023-11-14T22:13:20Z"}
            for m in MODEL_IDS
        ],
        "has_more": False,
        "first_id": MODEL_IDS[0],
        "last_id": MODEL_IDS[-1],
    }
)


def messages(body: object, ids: IdSource, created: int) -> Outcome:
    """Answer ``POST /v1/messages``; ``max_tokens`` is required, as by the real API."""
    del created  # Anthropic messages carry no timestamp
    request = as_object(body)
    model = required_model(request)
    turns = required_messages(request)
    if request.get("max_tokens") is None:
        raise BadRequest("max_tokens: Field required", "max_tokens")
    limit = optional_int(request, "max_tokens")
    system = content_text(request.get("system"), tool_results=False)
    reply = compose(turns, limit, _tool(request, turns), system)
    message_id = ids.make("msg_")
    tool_id = ids.make("toolu_") if reply.tool_call is not None else ""
    if request.get("stream") is True:
        return _stream(message_id, model, reply, tool_id)
    return JsonBody(_plain(message_id, model, reply, tool_id))


def _stop_reason(reply: Reply) -> str:
    if reply.tool_call is not None:
        return "tool_use"
    return "max_tokens" if reply.truncated else "end_turn"


def _plain(message_id: str, model: str, reply: Reply, tool_id: str) -> bytes:
    block: dict[str, Any]
    if reply.tool_call is not None:
        arguments = orjson.loads(reply.tool_call.arguments)
        block = {
            "type": "tool_use",
            "id": tool_id,
            "name": reply.tool_call.name,
            "input": arguments,
        }
    else:
        block = {"type": "text", "text": reply.text}
    return orjson.dumps(
        {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "content": [block],
            "model": model,
            "stop_reason": _stop_reason(reply),
            "stop_sequence": None,
            "usage": {
                "input_tokens": reply.prompt_tokens,
                "output_tokens": reply.completion_tokens,
                "cache_read_input_tokens": 0,
                "cache_creation_input_tokens": 0,
            },
        }
    )


def _stream(message_id: str, model: str, reply: Reply, tool_id: str) -> StreamBody:
    start = {
        "type": "message_start",
        "message": {
            "id": message_id,
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": model,
            "stop_reason": None,
            "stop_sequence": None,
            # Like the real API: a placeholder here, the true count in message_delta.
            "usage": {
                "input_tokens": reply.prompt_tokens,
                "output_tokens": 1,
                "cache_read_input_tokens": 0,
                "cache_creation_input_tokens": 0,
            },
        },
    }
    block: dict[str, Any]
    if reply.tool_call is not None:
        call = reply.tool_call
        block = {"type": "tool_use", "id": tool_id, "name": call.name, "input": {}}
        deltas = [{"type": "input_json_delta", "partial_json": f} for f in call.fragments]
    else:
        block = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": piece} for piece in reply.pieces]
    head = (
        sse_event(b"message_start", orjson.dumps(start))
        + sse_event(
            b"content_block_start",
            orjson.dumps({"type": "content_block_start", "index": 0, "content_block": block}),
        )
        + sse_event(b"ping", b'{"type":"ping"}')
    )
    content = tuple(
        sse_event(
            b"content_block_delta",
            orjson.dumps({"type": "content_block_delta", "index": 0, "delta": delta}),
        )
        for delta in deltas
    )
    final = {
        "type": "message_delta",
        "delta": {"stop_reason": _stop_reason(reply), "stop_sequence": None},
        "usage": {"output_tokens": reply.completion_tokens},
    }
    tail = (
        sse_event(b"content_block_stop", b'{"type":"content_block_stop","index":0}')
        + sse_event(b"message_delta", orjson.dumps(final))
        + sse_event(b"message_stop", b'{"type":"message_stop"}')
    )
    return StreamBody(head=head, content=content, tail=tail)


def _tool(request: Mapping[str, Any], turns: list[dict[str, Any]]) -> ToolSpec | None:
    """The tool to call: forced by ``tool_choice``, else the first one on the trigger."""
    tools = request.get("tools")
    if tools is None:
        return None
    if not isinstance(tools, list):
        raise BadRequest("tools: Input should be a valid list", "tools")
    specs = [
        ToolSpec(t["name"], t["input_schema"] if isinstance(t.get("input_schema"), dict) else {})
        for t in tools
        if isinstance(t, dict) and isinstance(t.get("name"), str)
    ]
    choice = request.get("tool_choice")
    kind = choice.get("type") if isinstance(choice, dict) else "auto"
    if not specs or kind == "none":
        return None
    if kind == "tool":
        name = choice.get("name") if isinstance(choice, dict) else None
        for spec in specs:
            if spec.name == name:
                return spec
        raise BadRequest(f"tool_choice names unknown tool {name!r}", "tool_choice")
    if kind == "any" or asks_for_tool(turns):
        return choose_tool(specs, turns)
    return None
