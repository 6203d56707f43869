"""Query parameters and times, read one way for every admin route.

A route declares its parameters as a ``Query`` model, whose JSON Schema is what the
OpenAPI document shows, and reads them with ``Model.parse(request.query_params)``::

    class AlertsQuery(Query):
        limit: Annotated[int, Count(default=50, high=1000)] = 50

    limit = AlertsQuery.parse(request.query_params).limit

Every check is a 400 naming the parameter: a count that is not plain ASCII digits
(``"²".isdigit()`` is true but ``int("²")`` fails; ``int("１０")`` is 10 but not what a
client meant) or out of its bounds; a time that is not RFC 3339. An empty filter or time
is the same as none. A NUL anywhere in a query never gets here: the edge guard (``web.guard``)
refuses it, naming the parameter, before any route runs.

``parse_time`` is also the one reader of times in bodies (``expires_at``), and
``time_param`` of bounds on the command line (``tollhouse usage --since``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Self

from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError, WithJsonSchema
from pydantic_core import CoreSchema, core_schema
from pydantic_core.core_schema import ValidationInfo
from starlette.datastructures import QueryParams

from tollhouse.errors import ValidationFailed
from tollhouse.web.validation import preview

# Enough for any bound we use; a longer string of digits is refused before int() reads it.
_MAX_DIGITS = 12
# Any value but one with a NUL (which the edge refuses before a route runs).
NO_NUL = "^[^\\x00]*$"


def ascii_digits(value: str) -> bool:
    """``0``-``9`` only, at most 12 of them (``str.isdigit`` also takes ``²`` and ``١``)."""
    return value.isascii() and value.isdigit() and len(value) <= _MAX_DIGITS


def parse_time(value: str, *, unix_seconds: bool = False) -> datetime:
    """An RFC 3339 / ISO 8601 time (``2027-01-01T00:00:00Z``, ``2027-01-01``; no offset
    means UTC) as an aware UTC ``datetime``; Unix seconds too when ``unix_seconds``.
    ``ValueError`` with the reason otherwise."""
    try:
        number = value.replace(".", "", 1)
        if unix_seconds and number.isascii() and number.isdigit():
            return datetime.fromtimestamp(float(value), UTC)
        moment = datetime.fromisoformat(value)
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 is before year 1 in UTC
        raise ValueError(f"is out of range ({preview(value)})") from None
    except (ValueError, OSError):
        also = " or Unix seconds" if unix_seconds else ""
        raise ValueError(
            f"must be an RFC 3339 time such as 2027-01-01T00:00:00Z{also}, got {preview(value)!r}"
        ) from None


class Query(BaseModel):
    """A route's query parameters; unknown ones are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    @classmethod
    def parse(cls, params: QueryParams) -> Self:
        try:
            return cls.model_validate(dict(params))
        except ValidationError as exc:  # a type no validator below checks first
            error = exc.errors(include_url=False)[0]
            name = str(error["loc"][0]) if error["loc"] else "query"
            raise ValidationFailed(f"{name} is not valid: {error['msg']}", param=name) from None


def _blank_is_none(value: Any) -> Any:
    return None if value == "" else value


# An id or a name to filter on: any text (no NUL); empty means no filter.
Filter = Annotated[
    str | None,
    BeforeValidator(_blank_is_none),
    WithJsonSchema({"type": "string", "pattern": NO_NUL}),
]


@dataclass(frozen=True, slots=True)
class Count:
    """``Annotated[int, Count(default=50, high=1000)]``: a whole number from ``low`` to
    ``high`` in ASCII digits."""

    default: int
    high: int
    low: int = 1

    def check(self, value: Any, info: ValidationInfo) -> int:
        name = info.field_name or "query"
        if isinstance(value, int) and not isinstance(value, bool):  # a model built in code
            value = str(value)
        if not isinstance(value, str) or not ascii_digits(value):
            value = None
        if value is None or not self.low <= int(value) <= self.high:
            raise ValidationFailed(
                f"{name} must be an integer from {self.low} to {self.high}", param=name
            )
        return int(value)

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> CoreSchema:
        return core_schema.with_info_plain_validator_function(self.check)

    def __get_pydantic_json_schema__(self, schema: Any, handler: Any) -> dict[str, Any]:
        return {
            "type": "integer",
            "minimum": self.low,
            "maximum": self.high,
            "default": self.default,
        }


def time_param(value: str | None, name: str) -> datetime | None:
    """A bound on a time as a query or an option gives it: RFC 3339 or Unix seconds;
    empty or absent is no bound; a 400 naming ``name`` otherwise."""
    if value is None or value == "":
        return None
    try:
        return parse_time(value, unix_seconds=True)
    except ValueError as exc:
        raise ValidationFailed(f"{name} {exc}", param=name) from None


def _moment(value: Any, info: ValidationInfo) -> datetime | None:
    if value is not None and not isinstance(value, str):
        value = str(value)
    return time_param(value, info.field_name or "query")


# A bound on a time: RFC 3339 (a date alone too; no offset: UTC) or Unix seconds; empty:
# no bound.
Moment = Annotated[
    datetime | None,
    BeforeValidator(_moment),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "format": "date-time"},
                {"type": "string", "format": "date"},
                {"type": "string", "pattern": "^[0-9]{1,10}([.][0-9]{0,6})?$"},
                {"type": "string", "maxLength": 0},
            ],
            "examples": ["2026-11-21T10:00:00Z", "2026-11-21", "1795000000"],
        }
    ),
]


# Under a billion dollars: the bound compares with amounts stored, on SQLite, as 64-bit
# integers of nano-dollars.
_AMOUNT = re.compile(r"^[0-9]{1,9}(\.[0-9]{1,9})?$")


def _amount(value: Any, info: ValidationInfo) -> Decimal | None:
    if value is None or value == "":
        return None
    name = info.field_name or "query"
    text = str(value)
    if not _AMOUNT.match(text):
        raise ValidationFailed(
            f"{name} must be an amount of USD under a billion, such as 0.25 (at most 9 decimals), "
            f"got {preview(text)!r}",
            param=name,
        )
    return Decimal(text)


# A bound on an amount of USD, exact: plain decimal digits, at most 9 after the point.
Amount = Annotated[
    Decimal | None,
    BeforeValidator(_amount),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "pattern": _AMOUNT.pattern},
                {"type": "string", "maxLength": 0},
            ],
            "examples": ["0.25"],
        }
    ),
]
