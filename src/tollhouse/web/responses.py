"""``JSONResponse``: the one way Tollhouse writes JSON, for every domain.

- **orjson**, compact.
- **Exact numbers.** A ``Decimal`` (USD, ratios) is written digit for digit as a JSON
  number (``Decimal("12.50")`` → ``12.5``), never through a binary float.
- **One time format.** Every ``datetime`` is RFC 3339 in UTC with microseconds and a
  ``Z``: ``2026-11-21T10:00:00.000000Z`` (what Bifrost's Go clients parse; see
  docs/governance-api.md). ``rfc3339`` is that format for code that needs the string.
- **Models.** Content may be a Pydantic model (the admin API's response models, whose
  JSON Schema the OpenAPI document shows), a dict or a list of them.

In response models, ``Exact`` and ``Time`` are the field types whose JSON Schema says
what this module writes (a number; a date-time with the ``Z`` form's pattern).
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

import orjson
from pydantic import BaseModel, ConfigDict, WithJsonSchema
from starlette.background import BackgroundTask
from starlette.responses import Response

from tollhouse.money import format_usd

TIME_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z$"

Exact = Annotated[
    Decimal,
    WithJsonSchema({"type": "number", "description": "exact: written digit for digit"}),
]
Time = Annotated[
    datetime,
    WithJsonSchema(
        {
            "type": "string",
            "format": "date-time",
            "pattern": TIME_PATTERN,
            "examples": ["2026-11-21T10:00:00.000000Z"],
        }
    ),
]


class Reply(BaseModel):
    """A response model: every field always present (``null`` when unset), nothing more
    (``additionalProperties: false`` in the document)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def rfc3339(moment: datetime | None) -> str | None:
    """``moment`` in the one time format; ``None`` stays ``None``."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def exact(value: Decimal) -> orjson.Fragment:
    """A ``Decimal`` as a raw JSON number, digit for digit (``1.0`` → ``1``)."""
    return orjson.Fragment(format_usd(value).encode())


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return exact(value)
    if isinstance(value, datetime):
        return rfc3339(value)
    if isinstance(value, BaseModel):
        return value.model_dump()
    raise TypeError(f"cannot serialise {type(value).__name__}")


_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME


def dumps(content: Any, *, indent: bool = False) -> bytes:
    """``content`` as JSON bytes, in the form ``JSONResponse`` writes (``indent`` for
    people: the CLI's ``--json``)."""
    if isinstance(content, BaseModel):
        content = content.model_dump()
    options = _OPTIONS | orjson.OPT_INDENT_2 if indent else _OPTIONS
    return orjson.dumps(content, default=_default, option=options)


class JSONResponse(Response):
    """A JSON answer: ``JSONResponse(model_or_dict, status_code, headers)``."""

    media_type = "application/json"

    def __init__(
        self,
        content: Any,
        status_code: int = 200,
        headers: dict[str, str] | None = None,
        background: BackgroundTask | None = None,
    ) -> None:
        super().__init__(content, status_code, headers, background=background)

    def render(self, content: Any) -> bytes:
        return dumps(content)
