"""Reading JSON bodies: parsed once, refused with a 400 when not an object or too deep.

The size bound is ``EdgeGuard``'s, applied to every route at the ASGI ``receive``; the
depth bound is here because only a parsed body has a depth. Forwarding re-serialises
bodies (``orjson.dumps`` stops at 255 levels) and the estimators walk them recursively,
so a bound well below both keeps any body that passed from failing later with a 5xx.
"""

from __future__ import annotations

import re
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request

from tollhouse.errors import BadRequest, InvalidJSON
from tollhouse.web.guard import BODY_DONE


async def read_body(request: Request) -> bytes:
    """The whole body (already bounded in size by ``EdgeGuard``)."""
    try:
        body = await request.body()
    except ClientDisconnect:
        raise BadRequest("the client closed the connection before sending the body") from None
    request.scope[BODY_DONE] = True
    return body


def loads_object(raw: bytes, max_depth: int) -> dict[str, Any]:
    """``raw`` parsed as a JSON object nested at most ``max_depth`` levels."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidJSON(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidJSON("request body must be a JSON object")
    # Every level opens a bracket, so few brackets prove a shallow body without a walk
    # (two C-speed scans); only bodies with many brackets are walked.
    if raw.count(b"{") + raw.count(b"[") > max_depth:
        check_depth(body, max_depth)
    return body


def check_depth(value: Any, max_depth: int) -> None:
    """Raise ``InvalidJSON`` when ``value`` nests deeper than ``max_depth`` (iteratively)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > max_depth:
            raise InvalidJSON(f"request body is nested deeper than {max_depth} levels")
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values() if _nests(child))
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item if _nests(child))


def _nests(value: Any) -> bool:
    return isinstance(value, dict | list)


# A ``\\u`` escape of a UTF-16 surrogate: paired (an emoji) or lone.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def check_surrogates(raw: bytes, value: Any) -> None:
    """Refuse lone surrogates that the standard library's parser lets through
    (``"\\ud800"``): no database, encoder or template takes them. Only bodies that
    escape a surrogate at all are walked."""
    if not _SURROGATE_ESCAPE.search(raw):
        return
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise InvalidJSON("Invalid JSON: a string holds a lone surrogate") from None
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


async def read_json_object(request: Request) -> dict[str, Any]:
    """The body of ``request`` as a JSON object, with the app's depth bound."""
    settings = request.app.state.settings
    return loads_object(await read_body(request), settings.max_json_depth)
