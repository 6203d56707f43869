"""Error bodies in the two wire formats, and the dev upstream's two exceptions.

A client SDK picks its exception class from the status and parses the body, so each
format must be exact: OpenAI ``{"error": {message, type, param, code}}`` and Anthropic
``{"type": "error", "error": {type, message}}``.
"""

from __future__ import annotations

from enum import Enum

import orjson


class WireFormat(Enum):
    """Which provider's shapes a path speaks; decides how its errors look."""

    OPENAI = "openai"
    ANTHROPIC = "anthropic"


class BadRequest(Exception):
    """The request body is not something the real API would accept (answered 400)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class InjectedDisconnect(Exception):
    """Raised on purpose to drop a stream mid-body (``disconnect_after_chunks``).

    ASGI has no "abort connection" message; an exception after the response started
    makes uvicorn close the socket without the terminating chunk, which is exactly what
    a client sees when a provider dies mid-stream. ``server.py`` keeps it out of the log.
    In-process (``httpx.ASGITransport``) the exception reaches the caller instead.
    """


# Real OpenAI uses invalid_request_error for most 4xx and server_error for 5xx.
_OPENAI_TYPES: dict[int, tuple[str, str | None]] = {
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", None),
    404: ("invalid_request_error", "not_found"),
    429: ("requests", "rate_limit_exceeded"),
}

# https://docs.anthropic.com/en/api/errors
_ANTHROPIC_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def openai_error(
    status: int, message: str, *, param: str | None = None, code: str | None = None
) -> bytes:
    """``{"error": {message, type, param, code}}`` with the type real OpenAI uses."""
    default_type = "server_error" if status >= 500 else "invalid_request_error"
    error_type, default_code = _OPENAI_TYPES.get(status, (default_type, None))
    error = {"message": message, "type": error_type, "param": param, "code": code or default_code}
    return orjson.dumps({"error": error})


def anthropic_error(status: int, message: str) -> bytes:
    """``{"type": "error", "error": {type, message}}`` as the Messages API sends it."""
    fallback = "api_error" if status >= 500 else "invalid_request_error"
    error_type = _ANTHROPIC_TYPES.get(status, fallback)
    return orjson.dumps({"type": "error", "error": {"type": error_type, "message": message}})


def error_body(wire: WireFormat, status: int, message: str, param: str | None = None) -> bytes:
    """The error body for ``status`` in the format of the path that was called."""
    if wire is WireFormat.ANTHROPIC:
        return anthropic_error(status, message)
    return openai_error(status, message, param=param)
