"""Field checks shared by both wire formats: a bad field is a 400 naming it, never a 500."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import BadRequest


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def as_object(body: object) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object")
    return body


def required_model(request: Mapping[str, Any]) -> str:
    model = request.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("'model' is required and must be a non-empty string", "model")
    return model


def required_messages(request: Mapping[str, Any]) -> list[dict[str, Any]]:
    messages = request.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequest("'messages' must be a non-empty array", "messages")
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise BadRequest(f"messages[{index}] must be an object with a 'role'", "messages")
    return messages


def optional_int(request: Mapping[str, Any], key: str) -> int | None:
    """A positive integer field, or ``None`` when absent or null."""
    value = request.get(key)
    if value is None:
        return None
    if not is_int(value) or value < 1:
        raise BadRequest(f"'{key}' must be a positive integer", key)
    return int(value)
