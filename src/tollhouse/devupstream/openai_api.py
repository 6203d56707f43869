"""OpenAI wire format: chat completions (plain, SSE, tool calls), embeddings, models.

Shapes follow what the official ``openai`` SDK parses, including the details gateways
trip over: ``usage: null`` on every chunk when ``stream_options.include_usage`` is on,
then a last chunk with ``choices: []`` and the usage, then ``data: [DONE]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from .content import (
    DEFAULT_EMBEDDING_DIMENSIONS,
    Reply,
    ToolSpec,
    asks_for_tool,
    choose_tool,
    compose,
    embedding,
    embedding_base64,
)
from .errors import BadRequest
from .frames import IdSource, JsonBody, Outcome, StreamBody, sse_data
from .validation import as_object, is_int, optional_int, required_messages, required_model

SYSTEM_FINGERPRINT = "fp_tollhouse_dev"
MAX_EMBEDDING_DIMENSIONS = 8192

# Listed by GET /v1/models; any other model name is accepted and echoed all the same.
MODEL_IDS: tuple[str, ...] = (
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-4.1-mini",
    "o4-mini",
    "text-embedding-3-small",
    "text-embedding-3-large",
    "claude-sonnet-4-5",
    "claude-haiku-4-5",
)
MODELS_CREATED = 1_700_000_000

MODELS_BODY = orjson.dumps(
    {
        "object": "list",
        "data": [
            {"id": m, "object": "model", "created": MODELS_CREATED, "owned_by": "tollhouse-dev"}
            for m in MODEL_IDS
        ],
    }
)
_DONE = b"data: [DONE]\n\n"


def chat_completions(body: object, ids: IdSource, created: int) -> Outcome:
    """Answer ``POST /v1/chat/completions``; raises ``BadRequest`` like the real API."""
    request = as_object(body)
    model = required_model(request)
    messages = required_messages(request)
    limit = optional_int(request, "max_completion_tokens") or optional_int(request, "max_tokens")
    reply = compose(messages, limit, _tool(request, messages))
    base: dict[str, Any] = {"id": ids.make("chatcmpl-"), "created": created, "model": model}
    if request.get("stream") is True:
        options = request.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        return _chat_stream(base, reply, include_usage, ids)
    return JsonBody(_chat_json(base, reply, ids))


def _finish_reason(reply: Reply) -> str:
    if reply.tool_call is not None:
        return "tool_calls"
    return "length" if reply.truncated else "stop"


def _usage(reply: Reply) -> dict[str, Any]:
    return {
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": reply.completion_tokens,
        "total_tokens": reply.prompt_tokens + reply.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": 0},
    }


def _chat_json(base: dict[str, Any], reply: Reply, ids: IdSource) -> bytes:
    message: dict[str, Any] = {"role": "assistant", "content": reply.text, "refusal": None}
    if reply.tool_call is not None:
        call = reply.tool_call
        function = {"name": call.name, "arguments": call.arguments}
        message["content"] = None
        message["tool_calls"] = [
            {"id": ids.make("call_"), "type": "function", "function": function}
        ]
    choice = {
        "index": 0,
        "message": message,
        "logprobs": None,
        "finish_reason": _finish_reason(reply),
    }
    return orjson.dumps(
        {
            "id": base["id"],
            "object": "chat.completion",
            "created": base["created"],
            "model": base["model"],
            "system_fingerprint": SYSTEM_FINGERPRINT,
            "choices": [choice],
            "usage": _usage(reply),
        }
    )


def _chat_stream(
    base: dict[str, Any], reply: Reply, include_usage: bool, ids: IdSource
) -> StreamBody:
    envelope = {
        "id": base["id"],
        "object": "chat.completion.chunk",
        "created": base["created"],
        "model": base["model"],
        "system_fingerprint": SYSTEM_FINGERPRINT,
    }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        payload: dict[str, Any] = {**envelope, "choices": [choice]}
        if include_usage:
            payload["usage"] = None
        return sse_data(orjson.dumps(payload))

    if reply.tool_call is not None:
        call = reply.tool_call
        opening = {
            "index": 0,
            "id": ids.make("call_"),
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }
        head = chunk({"role": "assistant", "content": None, "tool_calls": [opening]})
        content = tuple(
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": fragment}}]})
            for fragment in call.fragments
        )
    else:
        head = chunk({"role": "assistant", "content": ""})
        content = tuple(chunk({"content": piece}) for piece in reply.pieces)
    tail = chunk({}, _finish_reason(reply))
    if include_usage:
        tail += sse_data(orjson.dumps({**envelope, "choices": [], "usage": _usage(reply)}))
    return StreamBody(head=head, content=content, tail=tail + _DONE)


def _tool(request: Mapping[str, Any], messages: list[dict[str, Any]]) -> ToolSpec | None:
    """The tool to call: forced by ``tool_choice``, else the first one on the trigger."""
    tools = request.get("tools")
    if tools is None:
        return None
    if not isinstance(tools, list):
        raise BadRequest("'tools' must be an array", "tools")
    specs: list[ToolSpec] = []
    for tool in tools:
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            parameters = function.get("parameters")
            specs.append(
                ToolSpec(function["name"], parameters if isinstance(parameters, dict) else {})
            )
    choice = request.get("tool_choice", "auto")
    if not specs or choice == "none":
        return None
    if isinstance(choice, dict):
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        for spec in specs:
            if spec.name == name:
                return spec
        raise BadRequest(f"tool_choice names unknown function {name!r}", "tool_choice")
    if choice == "required" or asks_for_tool(messages):
        return choose_tool(specs, messages)
    return None


def embeddings(body: object, ids: IdSource, created: int) -> Outcome:
    """Answer ``POST /v1/embeddings`` with hashed unit vectors, float or base64."""
    del ids, created  # embeddings carry no id or timestamp
    request = as_object(body)
    model = required_model(request)
    inputs = _embedding_inputs(request.get("input"))
    dimensions = optional_int(request, "dimensions") or DEFAULT_EMBEDDING_DIMENSIONS
    if dimensions > MAX_EMBEDDING_DIMENSIONS:
        raise BadRequest(f"'dimensions' must be at most {MAX_EMBEDDING_DIMENSIONS}", "dimensions")
    encoding = request.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise BadRequest("'encoding_format' must be 'float' or 'base64'", "encoding_format")
    data = []
    for index, (raw, _) in enumerate(inputs):
        vector = embedding(raw, dimensions)
        encoded: object = embedding_base64(vector) if encoding == "base64" else vector
        data.append({"object": "embedding", "index": index, "embedding": encoded})
    tokens = max(1, sum(count for _, count in inputs))
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return JsonBody(orjson.dumps({"object": "list", "data": data, "model": model, "usage": usage}))


def _embedding_inputs(value: object) -> list[tuple[bytes, int]]:
    """Each input as (bytes to hash, prompt tokens): strings count bytes // 4."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value:
        raise BadRequest("'input' must be a non-empty string or array", "input")
    if all(is_int(v) for v in value):
        value = [value]
    inputs: list[tuple[bytes, int]] = []
    for item in value:
        if isinstance(item, str) and item:
            raw = item.encode()
            inputs.append((raw, len(raw) // 4))
        elif isinstance(item, list) and item and all(is_int(t) for t in item):
            inputs.append((",".join(map(str, item)).encode(), len(item)))
        else:
            raise BadRequest("'input' items must be non-empty strings or token arrays", "input")
    return inputs
