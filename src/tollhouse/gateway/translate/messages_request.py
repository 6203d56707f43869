"""OpenAI chat request -> Anthropic Messages request.

Used when a client calls ``/v1/chat/completions`` and the route resolves to an
Anthropic provider. The structural differences handled here:

- system and developer messages, wherever they appear, become ``system``;
- tool messages become user turns holding ``tool_result`` blocks, and assistant
  ``tool_calls`` become ``tool_use`` blocks (argument strings parsed to objects);
- consecutive same-role turns are merged, since Anthropic requires alternation,
  with ``tool_result`` blocks moved first as Anthropic also requires;
- ``max_tokens`` is mandatory on Anthropic, so a default fills it in.

Parameters with no Anthropic meaning (``seed``, ``logit_bias``, penalties,
``logprobs``, ``response_format`` other than ``json_schema``) are dropped;
ones whose loss would change the answer (``n`` > 1, temperature above 1,
audio input) raise `TranslationError`.
"""

from __future__ import annotations

from typing import Any

from ._utils import (
    as_dict,
    as_list,
    as_optional_list,
    as_str,
    image_source,
    parse_arguments,
    pdf_data,
    text_of,
    tool_use_id,
    unsupported,
)
from .errors import TranslationError

__all__ = ["chat_request_to_messages"]

_TARGET = "Anthropic"


def chat_request_to_messages(
    body: dict[str, Any], *, model: str, default_max_tokens: int
) -> dict[str, Any]:
    """Translate an OpenAI chat request `body` into an Anthropic Messages request.

    `model` is the provider's model name (the client's alias is already
    resolved); `default_max_tokens` is used when the client set neither
    ``max_completion_tokens`` nor ``max_tokens``. Raises `TranslationError`.
    """
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    messages = as_list(body.get("messages"), "messages")
    if not messages:
        raise TranslationError("messages must not be empty")
    for i, raw in enumerate(messages):
        where = f"messages[{i}]"
        message = as_dict(raw, where)
        role = message.get("role")
        if role in ("system", "developer"):
            text = text_of(message.get("content"), f"{where}.content", sep="\n\n")
            if text.strip():
                system.append({"type": "text", "text": text})
        elif role == "user":
            _append(turns, "user", _user_blocks(message.get("content"), f"{where}.content"))
        elif role == "assistant":
            _append(turns, "assistant", _assistant_blocks(message, where))
        elif role == "tool":
            _append(turns, "user", [_tool_result(message, where)])
        else:
            raise unsupported(f"{where}.role", role, _TARGET)

    out: dict[str, Any] = {"model": model, "max_tokens": _max_tokens(body, default_max_tokens)}
    if system:
        out["system"] = system[0]["text"] if len(system) == 1 else system
    out["messages"] = [_finish_turn(turn) for turn in turns]
    _copy_sampling(body, out)
    _copy_tools(body, out)
    user = body.get("user") or body.get("safety_identifier")
    if user:
        out["metadata"] = {"user_id": as_str(user, "user")}
    if body.get("stream"):
        out["stream"] = True
    output_format = _output_format(body.get("response_format"))
    if output_format is not None:
        out["output_config"] = {"format": output_format}
    return out


def _append(turns: list[dict[str, Any]], role: str, blocks: list[dict[str, Any]]) -> None:
    if not blocks:
        # Anthropic rejects empty content; an empty turn carries nothing anyway.
        return
    if turns and turns[-1]["role"] == role:
        turns[-1]["content"].extend(blocks)
    else:
        turns.append({"role": role, "content": blocks})


def _finish_turn(turn: dict[str, Any]) -> dict[str, Any]:
    blocks: list[dict[str, Any]] = turn["content"]
    if turn["role"] == "user":
        # Anthropic wants tool results before any other content in a user turn.
        blocks = sorted(blocks, key=lambda block: block["type"] != "tool_result")
    if len(blocks) == 1 and blocks[0]["type"] == "text":
        return {"role": turn["role"], "content": blocks[0]["text"]}
    return {"role": turn["role"], "content": blocks}


def _text(text: str) -> list[dict[str, Any]]:
    # Anthropic rejects text blocks that are empty or only whitespace.
    return [{"type": "text", "text": text}] if text.strip() else []


def _user_blocks(content: object, where: str) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return _text(content)
    blocks: list[dict[str, Any]] = []
    for i, raw in enumerate(as_list(content, where)):
        part_where = f"{where}[{i}]"
        part = as_dict(raw, part_where)
        kind = part.get("type")
        if kind == "text":
            blocks += _text(as_str(part.get("text"), f"{part_where}.text"))
        elif kind == "image_url":
            image = part.get("image_url")
            # Some clients send the URL directly instead of {"url": ...}.
            url = image if isinstance(image, str) else as_dict(image, part_where).get("url")
            source = image_source(as_str(url, f"{part_where}.image_url.url"), part_where)
            blocks.append({"type": "image", "source": source})
        elif kind == "file":
            file = as_dict(part.get("file"), f"{part_where}.file")
            if "file_data" not in file:
                raise TranslationError(f"{part_where}.file needs file_data; file_id is unsupported")
            data = pdf_data(as_str(file["file_data"], f"{part_where}.file.file_data"), part_where)
            source = {"type": "base64", "media_type": "application/pdf", "data": data}
            blocks.append({"type": "document", "source": source})
        else:
            raise unsupported(f"{part_where}.type", kind, _TARGET)
    return blocks


def _assistant_blocks(message: dict[str, Any], where: str) -> list[dict[str, Any]]:
    if message.get("function_call") is not None:
        raise TranslationError(f"{where}.function_call is not supported; use tool_calls")
    content = message.get("content")
    blocks: list[dict[str, Any]] = []
    if isinstance(content, list):
        for i, raw in enumerate(content):
            part = as_dict(raw, f"{where}.content[{i}]")
            kind = part.get("type")
            if kind not in ("text", "refusal"):
                raise unsupported(f"{where}.content[{i}].type", kind, _TARGET)
            blocks += _text(as_str(part.get(kind), f"{where}.content[{i}].{kind}"))
    elif content is not None:
        blocks += _text(as_str(content, f"{where}.content"))
    elif isinstance(message.get("refusal"), str):
        blocks += _text(message["refusal"])
    for i, raw in enumerate(as_optional_list(message.get("tool_calls"), f"{where}.tool_calls")):
        call_where = f"{where}.tool_calls[{i}]"
        call = as_dict(raw, call_where)
        if call.get("type", "function") != "function":
            raise unsupported(f"{call_where}.type", call.get("type"), _TARGET)
        function = as_dict(call.get("function"), f"{call_where}.function")
        blocks.append(
            {
                "type": "tool_use",
                "id": tool_use_id(as_str(call.get("id"), f"{call_where}.id")),
                "name": as_str(function.get("name"), f"{call_where}.function.name"),
                "input": parse_arguments(
                    function.get("arguments"), f"{call_where}.function.arguments"
                ),
            }
        )
    return blocks


def _tool_result(message: dict[str, Any], where: str) -> dict[str, Any]:
    call_id = as_str(message.get("tool_call_id"), f"{where}.tool_call_id")
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": tool_use_id(call_id)}
    text = text_of(message.get("content"), f"{where}.content")
    if text:
        block["content"] = text
    return block


def _max_tokens(body: dict[str, Any], default: int) -> int:
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise TranslationError(f"{key} must be a positive integer")
        return value
    return default


def _copy_sampling(body: dict[str, Any], out: dict[str, Any]) -> None:
    n = body.get("n")
    if n not in (None, 1):
        raise TranslationError(f"n {n!r} is not supported by Anthropic; only one choice is")
    temperature = body.get("temperature")
    if temperature is not None:
        if not isinstance(temperature, int | float) or isinstance(temperature, bool):
            raise TranslationError("temperature must be a number")
        if temperature > 1:
            raise TranslationError(f"temperature {temperature} exceeds Anthropic's maximum of 1")
        out["temperature"] = temperature
    if body.get("top_p") is not None:
        out["top_p"] = body["top_p"]
    stop = body.get("stop")
    if isinstance(stop, str):
        out["stop_sequences"] = [stop]
    elif stop is not None:
        stops = as_list(stop, "stop")
        out["stop_sequences"] = [as_str(s, f"stop[{i}]") for i, s in enumerate(stops)]


def _copy_tools(body: dict[str, Any], out: dict[str, Any]) -> None:
    tools = []
    for i, raw in enumerate(as_optional_list(body.get("tools"), "tools")):
        tool = as_dict(raw, f"tools[{i}]")
        if tool.get("type", "function") != "function":
            raise unsupported(f"tools[{i}].type", tool.get("type"), _TARGET)
        function = as_dict(tool.get("function"), f"tools[{i}].function")
        schema = dict(as_dict(function.get("parameters") or {}, f"tools[{i}].function.parameters"))
        schema.setdefault("type", "object")
        converted: dict[str, Any] = {
            "name": as_str(function.get("name"), f"tools[{i}].function.name"),
            "input_schema": schema,
        }
        if function.get("description"):
            converted["description"] = function["description"]
        if isinstance(function.get("strict"), bool):
            converted["strict"] = function["strict"]
        tools.append(converted)
    if not tools:
        # tool_choice without tools means nothing; Anthropic would reject it.
        return
    out["tools"] = tools
    choice = _tool_choice(body.get("tool_choice"))
    if body.get("parallel_tool_calls") is False and choice["type"] != "none":
        choice["disable_parallel_tool_use"] = True
    if body.get("tool_choice") is not None or "disable_parallel_tool_use" in choice:
        out["tool_choice"] = choice


def _tool_choice(choice: object) -> dict[str, Any]:
    if choice is None or choice == "auto":
        return {"type": "auto"}
    if choice == "required":
        return {"type": "any"}
    if choice == "none":
        return {"type": "none"}
    if isinstance(choice, dict) and choice.get("type") == "function":
        function = as_dict(choice.get("function"), "tool_choice.function")
        return {"type": "tool", "name": as_str(function.get("name"), "tool_choice.function.name")}
    kind = choice.get("type") if isinstance(choice, dict) else choice
    raise unsupported("tool_choice", kind, _TARGET)


def _output_format(response_format: object) -> dict[str, Any] | None:
    if not isinstance(response_format, dict) or response_format.get("type") != "json_schema":
        # "text" is the default; "json_object" has no Anthropic equivalent without a schema.
        return None
    spec = as_dict(response_format.get("json_schema"), "response_format.json_schema")
    schema = as_dict(spec.get("schema"), "response_format.json_schema.schema")
    return {"type": "json_schema", "schema": schema}
