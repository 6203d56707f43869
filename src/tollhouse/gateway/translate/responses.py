"""Whole (non-streaming) responses, in both directions.

An Anthropic message's content blocks fold into one OpenAI assistant message:
text blocks are concatenated into ``content`` and ``tool_use`` blocks become
``tool_calls``; thinking and server-tool blocks have no OpenAI form and are
dropped. The other way, an OpenAI choice unfolds into a text block followed
by one ``tool_use`` block per call. Only the first choice is translated:
Anthropic has one message per response, and we never ask for more.
"""

from __future__ import annotations

import time
from typing import Any

from ._utils import (
    as_dict,
    as_list,
    as_optional_list,
    as_str,
    chat_id,
    dump_arguments,
    finish_reason,
    message_id,
    parse_arguments,
    stop_reason,
    unsupported,
)
from .errors import TranslationError
from .usage import Usage, chat_usage, messages_usage, usage_from_chat, usage_from_messages

__all__ = ["chat_response_to_messages", "messages_response_to_chat"]


def messages_response_to_chat(
    resp: dict[str, Any], *, model: str, created: int | None = None
) -> dict[str, Any]:
    """Translate an Anthropic Messages response into an OpenAI ``chat.completion``.

    `model` is the name the client asked for, echoed back as OpenAI does;
    `created` defaults to now (Anthropic responses carry no timestamp).
    """
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for i, raw in enumerate(as_list(resp.get("content"), "content")):
        block = as_dict(raw, f"content[{i}]")
        if block.get("type") == "text":
            texts.append(as_str(block.get("text"), f"content[{i}].text"))
        elif block.get("type") == "tool_use":
            function = {
                "name": as_str(block.get("name"), f"content[{i}].name"),
                "arguments": dump_arguments(block.get("input") or {}),
            }
            call_id = as_str(block.get("id"), f"content[{i}].id")
            calls.append({"id": call_id, "type": "function", "function": function})
    text = "".join(texts)
    message: dict[str, Any] = {
        "role": "assistant",
        "content": text if text or not calls else None,
        "refusal": None,
    }
    if calls:
        message["tool_calls"] = calls
    choice = {
        "index": 0,
        "message": message,
        "finish_reason": finish_reason(resp.get("stop_reason")),
        "logprobs": None,
    }
    out: dict[str, Any] = {
        "id": chat_id(as_str(resp.get("id"), "id")),
        "object": "chat.completion",
        "created": int(time.time()) if created is None else created,
        "model": model,
        "choices": [choice],
    }
    usage = usage_from_messages(resp.get("usage"))
    if usage is not None:
        out["usage"] = chat_usage(usage)
    return out


def chat_response_to_messages(resp: dict[str, Any], *, model: str) -> dict[str, Any]:
    """Translate an OpenAI ``chat.completion`` into an Anthropic Messages response.

    `model` is the name the client asked for. Tool-call arguments that are not
    a JSON object raise `TranslationError`, as Anthropic's ``input`` must be one.
    """
    choices = as_list(resp.get("choices"), "choices")
    if not choices:
        raise TranslationError("choices must not be empty")
    choice = as_dict(choices[0], "choices[0]")
    message = as_dict(choice.get("message"), "choices[0].message")
    where = "choices[0].message"
    content: list[dict[str, Any]] = []
    text = message.get("content")
    reason = stop_reason(choice.get("finish_reason"))
    if text is None and isinstance(message.get("refusal"), str):
        text, reason = message["refusal"], "refusal"
    if text:
        content.append({"type": "text", "text": as_str(text, f"{where}.content")})
    for i, raw in enumerate(as_optional_list(message.get("tool_calls"), "tool_calls")):
        call_where = f"{where}.tool_calls[{i}]"
        call = as_dict(raw, call_where)
        if call.get("type", "function") != "function":
            raise unsupported(f"{call_where}.type", call.get("type"), "Anthropic")
        function = as_dict(call.get("function"), f"{call_where}.function")
        arguments = function.get("arguments")
        content.append(
            {
                "type": "tool_use",
                "id": as_str(call.get("id"), f"{call_where}.id"),
                "name": as_str(function.get("name"), f"{call_where}.function.name"),
                "input": parse_arguments(arguments, f"{call_where}.function.arguments"),
            }
        )
    if reason == "end_turn" and any(block["type"] == "tool_use" for block in content):
        # Some servers end tool calls with "stop"; Anthropic clients key off "tool_use".
        reason = "tool_use"
    usage = usage_from_chat(resp.get("usage")) or Usage(prompt_tokens=0, completion_tokens=0)
    return {
        "id": message_id(as_str(resp.get("id"), "id")),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": reason,
        "stop_sequence": None,
        "usage": messages_usage(usage),
    }
