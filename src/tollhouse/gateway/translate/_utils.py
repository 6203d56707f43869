"""Helpers shared by both translation directions.

Every accessor takes the JSON path of the value it checks, so a malformed
body fails with a `TranslationError` naming the field rather than a
`KeyError` or `AttributeError` from deep inside a translator.
"""

from __future__ import annotations

import json
import re
from typing import Any

from .errors import TranslationError

# Anthropic stop_reason -> OpenAI finish_reason. "pause_turn" means a server tool
# paused a long turn; to an OpenAI client that is an ordinary stop.
FINISH_REASONS: dict[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

# OpenAI finish_reason -> Anthropic stop_reason. OpenAI does not say whether "stop"
# came from a stop sequence, so it maps to "end_turn".
STOP_REASONS: dict[str, str] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}

IMAGE_MEDIA_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})

_DATA_URL = re.compile(r"data:(?P<media>[^;,]+)(?:;[^;,]*)*;base64,(?P<data>.*)", re.DOTALL)
_TOOL_ID_INVALID = re.compile(r"[^a-zA-Z0-9_-]")


def as_dict(value: object, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TranslationError(f"{where} must be an object")
    return value


def as_list(value: object, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise TranslationError(f"{where} must be an array")
    return value


def as_optional_list(value: object, where: str) -> list[Any]:
    """``value`` as a list, ``[]`` when absent (``null``); anything else is refused."""
    return [] if value is None else as_list(value, where)


def as_str(value: object, where: str) -> str:
    if not isinstance(value, str):
        raise TranslationError(f"{where} must be a string")
    return value


def unsupported(where: str, value: object, target: str) -> TranslationError:
    """Build the error for a value the `target` format has no equivalent for."""
    return TranslationError(f"{where} {value!r} is not supported by {target}")


def finish_reason(stop_reason: object) -> str:
    """Map an Anthropic stop_reason to an OpenAI finish_reason (unknown -> "stop")."""
    return FINISH_REASONS.get(stop_reason, "stop") if isinstance(stop_reason, str) else "stop"


def stop_reason(finish: object) -> str:
    """Map an OpenAI finish_reason to an Anthropic stop_reason (unknown -> "end_turn")."""
    return STOP_REASONS.get(finish, "end_turn") if isinstance(finish, str) else "end_turn"


def chat_id(message_id: str) -> str:
    """Derive a chat.completion id from an Anthropic message id."""
    return message_id if message_id.startswith("chatcmpl-") else f"chatcmpl-{message_id}"


def message_id(completion_id: str) -> str:
    """Derive an Anthropic message id from a chat.completion id."""
    if completion_id.startswith("msg_"):
        return completion_id
    return f"msg_{completion_id.removeprefix('chatcmpl-')}"


def tool_use_id(raw: str) -> str:
    """Make an OpenAI tool call id acceptable to Anthropic (``^[a-zA-Z0-9_-]+$``).

    Applied to both the tool_use id and the tool_result's tool_use_id, so the
    pair still matches after substitution.
    """
    return _TOOL_ID_INVALID.sub("_", raw) or "toolu_"


def parse_arguments(raw: object, where: str) -> dict[str, Any]:
    """Parse OpenAI function-call arguments (a JSON string) into a tool input object."""
    if raw is None or raw == "":
        # Clients send "" for tools without parameters.
        return {}
    if isinstance(raw, dict):
        return raw
    text = as_str(raw, where)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise TranslationError(f"{where} is not valid JSON: {exc.msg}") from None
    if not isinstance(value, dict):
        raise TranslationError(f"{where} must encode a JSON object")
    return value


def dump_arguments(value: object) -> str:
    """Serialise a tool input object as OpenAI function-call arguments."""
    return json.dumps(value, ensure_ascii=False)


def image_source(url: str, where: str) -> dict[str, Any]:
    """Turn an OpenAI image URL (``data:`` or http(s)) into an Anthropic image source."""
    if url.startswith("data:"):
        match = _DATA_URL.fullmatch(url)
        if match is None:
            raise TranslationError(f"{where} must be a base64 data: URL or an http(s) URL")
        media = match["media"].lower()
        if media not in IMAGE_MEDIA_TYPES:
            raise unsupported(f"{where} media type", media, "Anthropic")
        return {"type": "base64", "media_type": media, "data": match["data"]}
    if url.startswith(("http://", "https://")):
        return {"type": "url", "url": url}
    raise TranslationError(f"{where} must be a base64 data: URL or an http(s) URL")


def pdf_data(url: str, where: str) -> str:
    """Extract base64 PDF bytes from an OpenAI ``file_data`` data: URL."""
    match = _DATA_URL.fullmatch(url)
    if match is None or match["media"].lower() != "application/pdf":
        raise TranslationError(f"{where} must be a base64 data:application/pdf URL")
    return match["data"]


def data_url(source: dict[str, Any], where: str) -> str:
    """Turn an Anthropic base64 or url source into a URL an OpenAI part accepts."""
    kind = source.get("type")
    if kind == "base64":
        media = as_str(source.get("media_type"), f"{where}.media_type")
        data = as_str(source.get("data"), f"{where}.data")
        return f"data:{media};base64,{data}"
    if kind == "url":
        return as_str(source.get("url"), f"{where}.url")
    raise unsupported(f"{where}.type", kind, "OpenAI-compatible providers")


def text_of(content: object, where: str, *, sep: str = "") -> str:
    """Join a string or a list of text parts/blocks into one string.

    Used where the target format (or most providers speaking it) accepts only
    plain text, such as system prompts and tool results.
    """
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    pieces = []
    for i, part in enumerate(as_list(content, where)):
        part = as_dict(part, f"{where}[{i}]")
        if part.get("type") != "text":
            raise TranslationError(
                f"{where}[{i}].type {part.get('type')!r} is not supported here; only text is"
            )
        pieces.append(as_str(part.get("text"), f"{where}[{i}].text"))
    return sep.join(pieces)
