"""Anthropic Messages request -> OpenAI chat request.

Used when a client calls ``/v1/messages`` and the route resolves to an
OpenAI-compatible provider. The structural differences handled here:

- ``system`` becomes a leading system message (text blocks joined, since many
  OpenAI-compatible servers accept only a string there);
- a user turn's ``tool_result`` blocks become ``tool`` messages placed before
  the rest of the turn, because OpenAI wants them right after the assistant
  message that made the calls; images inside tool results, which tool
  messages cannot carry, move into the user message that follows;
- ``tool_use`` blocks become ``tool_calls`` with the input serialised to JSON;
- ``max_tokens`` is sent as ``max_completion_tokens`` (OpenAI's current name).

Dropped without error, because an OpenAI-compatible model has no use for
them: ``thinking`` blocks and config, ``cache_control``, ``top_k``,
``is_error`` on tool results. Server tools (web search, code execution...)
and unsupported block types raise `TranslationError`.
"""

from __future__ import annotations

from typing import Any

from ._utils import (
    as_dict,
    as_list,
    as_optional_list,
    as_str,
    data_url,
    dump_arguments,
    text_of,
    unsupported,
)
from .errors import TranslationError

__all__ = ["messages_request_to_chat"]

_TARGET = "OpenAI-compatible providers"
_IGNORED_BLOCKS = frozenset({"thinking", "redacted_thinking"})


def messages_request_to_chat(body: dict[str, Any], *, model: str) -> dict[str, Any]:
    """Translate an Anthropic Messages request `body` into an OpenAI chat request.

    `model` is the provider's model name. When the request streams,
    ``stream_options.include_usage`` is set so the final chunk reports the
    token usage the gateway meters. Raises `TranslationError`.
    """
    out: dict[str, Any] = {"model": model, "messages": _messages(body)}
    max_tokens = body.get("max_tokens")
    if max_tokens is not None:
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            raise TranslationError("max_tokens must be a positive integer")
        out["max_completion_tokens"] = max_tokens
    for key in ("temperature", "top_p"):
        if body.get(key) is not None:
            out[key] = body[key]
    if body.get("stop_sequences"):
        stops = as_list(body["stop_sequences"], "stop_sequences")
        out["stop"] = [as_str(s, f"stop_sequences[{i}]") for i, s in enumerate(stops)]
    _copy_tools(body, out)
    metadata = body.get("metadata")
    if isinstance(metadata, dict) and metadata.get("user_id"):
        out["user"] = as_str(metadata["user_id"], "metadata.user_id")
    output_config = body.get("output_config")
    if isinstance(output_config, dict) and isinstance(output_config.get("format"), dict):
        schema = as_dict(output_config["format"].get("schema"), "output_config.format.schema")
        out["response_format"] = {
            "type": "json_schema",
            "json_schema": {"name": "output", "schema": schema},
        }
    if body.get("stream"):
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    return out


def _messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    system = body.get("system")
    if system:
        text = text_of(system, "system", sep="\n\n")
        if text:
            out.append({"role": "system", "content": text})
    messages = as_list(body.get("messages"), "messages")
    if not messages:
        raise TranslationError("messages must not be empty")
    for i, raw in enumerate(messages):
        where = f"messages[{i}]"
        message = as_dict(raw, where)
        role = message.get("role")
        content = message.get("content")
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        blocks = as_list(content, f"{where}.content")
        if role == "user":
            out += _user_messages(blocks, f"{where}.content")
        elif role == "assistant":
            out.append(_assistant_message(blocks, f"{where}.content"))
        else:
            raise unsupported(f"{where}.role", role, _TARGET)
    return out


def _user_messages(blocks: list[Any], where: str) -> list[dict[str, Any]]:
    tool_messages: list[dict[str, Any]] = []
    moved_images: list[dict[str, Any]] = []
    parts: list[dict[str, Any]] = []
    for i, raw in enumerate(blocks):
        block_where = f"{where}[{i}]"
        block = as_dict(raw, block_where)
        kind = block.get("type")
        if kind == "tool_result":
            tool_messages.append(_tool_message(block, block_where, moved_images))
        elif isinstance(kind, str) and kind in _IGNORED_BLOCKS:
            continue
        else:
            parts.append(_user_part(block, block_where))
    parts = moved_images + parts
    out = tool_messages
    if parts:
        # A lone text part goes as a plain string, the form every provider accepts.
        single_text = len(parts) == 1 and parts[0]["type"] == "text"
        out.append({"role": "user", "content": parts[0]["text"] if single_text else parts})
    return out


def _user_part(block: dict[str, Any], where: str) -> dict[str, Any]:
    kind = block.get("type")
    if kind == "text":
        return {"type": "text", "text": as_str(block.get("text"), f"{where}.text")}
    if kind == "image":
        url = data_url(as_dict(block.get("source"), f"{where}.source"), f"{where}.source")
        return {"type": "image_url", "image_url": {"url": url}}
    if kind == "document":
        source = as_dict(block.get("source"), f"{where}.source")
        if source.get("type") != "base64" or source.get("media_type") != "application/pdf":
            raise TranslationError(f"{where}.source must be a base64 PDF for {_TARGET}")
        file: dict[str, Any] = {"file_data": data_url(source, f"{where}.source")}
        file["filename"] = block.get("title") or "document.pdf"
        return {"type": "file", "file": file}
    raise unsupported(f"{where}.type", kind, _TARGET)


def _tool_message(
    block: dict[str, Any], where: str, moved_images: list[dict[str, Any]]
) -> dict[str, Any]:
    call_id = as_str(block.get("tool_use_id"), f"{where}.tool_use_id")
    content = block.get("content")
    texts: list[dict[str, Any]] = []
    if isinstance(content, list):
        for i, raw in enumerate(content):
            part = as_dict(raw, f"{where}.content[{i}]")
            if part.get("type") == "image":
                moved_images.append(_user_part(part, f"{where}.content[{i}]"))
            else:
                texts.append(part)
        content = texts
    text = text_of(content, f"{where}.content", sep="\n")
    return {"role": "tool", "tool_call_id": call_id, "content": text}


def _assistant_message(blocks: list[Any], where: str) -> dict[str, Any]:
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for i, raw in enumerate(blocks):
        block_where = f"{where}[{i}]"
        block = as_dict(raw, block_where)
        kind = block.get("type")
        if kind == "text":
            texts.append(as_str(block.get("text"), f"{block_where}.text"))
        elif kind == "tool_use":
            arguments = as_dict(block.get("input", {}), f"{block_where}.input")
            function = {
                "name": as_str(block.get("name"), f"{block_where}.name"),
                "arguments": dump_arguments(arguments),
            }
            call_id = as_str(block.get("id"), f"{block_where}.id")
            calls.append({"id": call_id, "type": "function", "function": function})
        elif not isinstance(kind, str) or kind not in _IGNORED_BLOCKS:
            raise unsupported(f"{block_where}.type", kind, _TARGET)
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
    if calls:
        message["tool_calls"] = calls
    elif message["content"] is None:
        message["content"] = ""
    return message


def _copy_tools(body: dict[str, Any], out: dict[str, Any]) -> None:
    tools = []
    for i, raw in enumerate(as_optional_list(body.get("tools"), "tools")):
        tool = as_dict(raw, f"tools[{i}]")
        if tool.get("type") not in (None, "custom"):
            # Server tools (web_search_..., bash_..., computer_...) run on Anthropic's side.
            raise unsupported(f"tools[{i}].type", tool.get("type"), _TARGET)
        function: dict[str, Any] = {"name": as_str(tool.get("name"), f"tools[{i}].name")}
        if tool.get("description"):
            function["description"] = tool["description"]
        function["parameters"] = as_dict(tool.get("input_schema"), f"tools[{i}].input_schema")
        if isinstance(tool.get("strict"), bool):
            function["strict"] = tool["strict"]
        tools.append({"type": "function", "function": function})
    if not tools:
        return
    out["tools"] = tools
    choice = body.get("tool_choice")
    if choice is None:
        return
    choice = as_dict(choice, "tool_choice")
    kind = choice.get("type")
    if kind == "auto":
        out["tool_choice"] = "auto"
    elif kind == "any":
        out["tool_choice"] = "required"
    elif kind == "none":
        out["tool_choice"] = "none"
    elif kind == "tool":
        name = as_str(choice.get("name"), "tool_choice.name")
        out["tool_choice"] = {"type": "function", "function": {"name": name}}
    else:
        raise unsupported("tool_choice.type", kind, _TARGET)
    if choice.get("disable_parallel_tool_use") is True:
        out["parallel_tool_calls"] = False
