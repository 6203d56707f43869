"""The documented error shapes (``docs/errors.md``), as checks that return what is wrong.

- ``/v1/messages``: Anthropic's ``{"type": "error", "error": {"type", "message"}}``;
- ``/api/*`` and ``/catalog/*`` (which the admin API's document describes):
  ``{"error": "<message>", "code": "<code>"}``;
- everything else (``/v1/chat/completions``, ``/v1/embeddings``, ``/v1/models``, the
  unprefixed aliases, unknown paths): OpenAI's
  ``{"error": {"message", "type", "param", "code"}}``.

A check returns a list of problems (empty: fine) instead of raising, so one test can
send many cases and name every one that failed.
"""

from __future__ import annotations

import json
from typing import Any


def shape_for(path: str) -> str:
    path = path.split("?", 1)[0]
    if path.startswith(("/api/", "/catalog/")):
        return "admin"
    if path.startswith("/v1/messages"):
        return "anthropic"
    return "openai"


def _str(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


def shape_problems(shape: str, body: Any) -> list[str]:
    """What is wrong with ``body`` as an error of ``shape`` (empty: nothing)."""
    if shape == "openai":
        if not isinstance(body, dict) or list(body) != ["error"]:
            return [f"not {{'error': {{...}}}}: {_clip(body)}"]
        error = body["error"]
        if not isinstance(error, dict) or set(error) != {"message", "type", "param", "code"}:
            return [f"error is not {{message, type, param, code}}: {_clip(error)}"]
        problems = []
        if not _str(error["message"]) or not _str(error["type"]):
            problems.append(f"message/type not non-empty strings: {_clip(error)}")
        for name in ("param", "code"):
            if error[name] is not None and not isinstance(error[name], str):
                problems.append(f"{name} neither a string nor null: {_clip(error)}")
        return problems
    if shape == "anthropic":
        if not isinstance(body, dict) or set(body) != {"type", "error"} or body["type"] != "error":
            return [f"not {{'type': 'error', 'error': {{...}}}}: {_clip(body)}"]
        error = body["error"]
        if not isinstance(error, dict) or set(error) != {"type", "message"}:
            return [f"error is not {{type, message}}: {_clip(error)}"]
        if not _str(error["type"]) or not _str(error["message"]):
            return [f"type/message not non-empty strings: {_clip(error)}"]
        return []
    assert shape == "admin", shape
    if not isinstance(body, dict) or set(body) != {"error", "code"}:
        return [f"not {{'error': str, 'code': str}}: {_clip(body)}"]
    if not _str(body["error"]) or not _str(body["code"]):
        return [f"error/code not non-empty strings: {_clip(body)}"]
    return []


# What uvicorn answers, before any application code runs, to a request that is not valid
# HTTP/1.1 (a NUL in a header value, a method token it does not know, contradictory
# framing): a refusal of the protocol layer, which no route can shape.
PROTOCOL_REFUSAL = (400, b"Invalid HTTP request received.")


def response_problems(
    path: str, status: int, content_type: str, content: bytes, method: str = "GET"
) -> list[str]:
    """Never a 5xx; every 4xx is JSON in the shape of its path."""
    problems = []
    if status >= 500:
        problems.append(f"server error {status}")
    if status < 400 or (status, content) == PROTOCOL_REFUSAL:
        return problems
    if not content_type.startswith("application/json"):
        return [*problems, f"{status} with content-type {content_type!r}: {content[:160]!r}"]
    if method == "HEAD":
        return problems  # the headers of the GET answer, without its body
    try:
        body = json.loads(content)
    except ValueError:
        return [*problems, f"{status} body is not JSON: {content[:160]!r}"]
    return problems + [f"{status} {p}" for p in shape_problems(shape_for(path), body)]


def _clip(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=True, default=repr)
    return text if len(text) <= 200 else text[:200] + "…"
