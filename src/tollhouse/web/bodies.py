"""Reading JSON bodies: one reader, one policy, for every route that takes JSON.

- **Size** is ``EdgeGuard``'s (``max_request_body_mb``), applied to every route at the
  ASGI ``receive``.
- **Depth** is bounded here (``max_json_depth``), because only a parsed body has a
  depth: forwarding re-serialises bodies (``orjson.dumps`` stops at 255 levels) and the
  estimators walk them recursively, so a bound well below both keeps any body that
  passed from failing later with a 5xx. Admin bodies get the same bound.
- **Numbers.** Gateway bodies are forwarded to providers, so ``orjson`` reads them as
  they are (``exact=False``). Admin bodies carry money, so no number in them passes
  through a binary float (``exact=True``): a fraction is a ``Decimal``, an integer an
  ``int`` (a very long one a ``Decimal``, which the field's own check refuses by name),
  and ``NaN``/``Infinity`` are not JSON.
- **Text.** A lone UTF-16 surrogate (``"\\ud800"``) is refused: no database, encoder or
  template takes one.

Every refusal is a 400 ``invalid_json`` (docs/errors.md).
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any, Protocol

import orjson
from starlette.requests import ClientDisconnect, Request

from tollhouse.config import Settings
from tollhouse.errors import BadRequest, InvalidJSON
from tollhouse.web.guard import BODY_DONE

# An integer with more digits than this is read as a ``Decimal``: ``int()`` refuses past
# 4300 digits, and no field wants 100.
_LONGEST_INT = 100


async def read_body(request: Request) -> bytes:
    """The whole body (already bounded in size by ``EdgeGuard``)."""
    try:
        body = await request.body()
    except ClientDisconnect:
        raise BadRequest("the client closed the connection before sending the body") from None
    request.scope[BODY_DONE] = True
    return body


def loads_object(raw: bytes, max_depth: int, *, exact: bool = False) -> dict[str, Any]:
    """``raw`` parsed as a JSON object nested at most ``max_depth`` levels; numbers as
    ``Decimal``/``int`` when ``exact`` (see above)."""
    if exact:
        return _loads_exact(raw, max_depth)
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidJSON(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidJSON("request body must be a JSON object")
    if _may_nest(raw, max_depth):
        check_depth(body, max_depth)
    return body


def _may_nest(raw: bytes, max_depth: int) -> bool:
    # Every level opens a bracket, so few brackets prove a shallow body without a walk
    # (two C-speed scans); only bodies with many brackets are walked.
    return raw.count(b"{") + raw.count(b"[") > max_depth


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _integer(text: str) -> int | Decimal:
    return int(text) if len(text) <= _LONGEST_INT else Decimal(text)


def _loads_exact(raw: bytes, max_depth: int) -> dict[str, Any]:
    if not raw.strip():
        raise InvalidJSON("Invalid JSON: the request body is empty; send a JSON object")
    try:
        data = json.loads(
            raw, parse_float=Decimal, parse_int=_integer, parse_constant=_reject_constant
        )
    except RecursionError:
        # The standard parser recurses once per level, up to the interpreter's limit: a
        # body that reaches it is deeper than any bound, whatever the stack's headroom.
        raise _too_deep(max_depth, exact=True) from None
    except json.JSONDecodeError as exc:
        raise InvalidJSON(
            f"Invalid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    except ValueError as exc:  # bad UTF-8, NaN
        raise InvalidJSON(f"Invalid JSON: {str(exc)[:200]}") from None
    if not isinstance(data, dict):
        raise InvalidJSON(f"Invalid JSON: the body must be a JSON object, got {json_type(data)}")
    if _may_nest(raw, max_depth):
        check_depth(data, max_depth, exact=True)
    check_surrogates(raw, data)
    return data


def json_type(value: Any) -> str:
    """The JSON name of a parsed value's type, for messages (``got array``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float | Decimal):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def check_depth(value: Any, max_depth: int, *, exact: bool = False) -> None:
    """Raise ``InvalidJSON`` when ``value`` nests deeper than ``max_depth`` (iteratively)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > max_depth:
            raise _too_deep(max_depth, exact)
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values() if _nests(child))
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item if _nests(child))


def _too_deep(max_depth: int, exact: bool) -> InvalidJSON:
    text = f"request body is nested deeper than {max_depth} levels"
    # Admin bodies word every JSON refusal "Invalid JSON: …" (docs/errors.md).
    return InvalidJSON(f"Invalid JSON: {text}" if exact else text)


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


class BodyLimits(Protocol):
    """What the body reader uses of the running service (``web/services.py``)."""

    @property
    def settings(self) -> Settings: ...


def max_depth(request: Request) -> int:
    services: BodyLimits = request.app.services
    return services.settings.max_json_depth


async def read_json_object(request: Request, *, exact: bool = False) -> dict[str, Any]:
    """The body of ``request`` as a JSON object, with the app's depth bound."""
    return loads_object(await read_body(request), max_depth(request), exact=exact)
