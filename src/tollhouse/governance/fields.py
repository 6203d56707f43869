"""Field types of the governance bodies: how each value is checked, and its JSON Schema.

Numbers arrive exact (``web.bodies``: a fraction is a ``Decimal``, never a float) and
are bounded before anything is computed from them (``web.validation.number``,
``bounds``). ``null`` reads differently in the two kinds of body (docs/governance-api.md):

- **create** — ``null`` is the same as leaving the field out (Bifrost's pointer fields):
  ``Annotated[T, or_default(...)]`` with ``null_is_default`` for its schema;
- **update** — a field left out is unchanged; ``null`` clears a field that may be empty
  and is a 400 for one that may not: ``Kept[T]``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal, TypeVar
from zoneinfo import available_timezones

from pydantic import AfterValidator, BeforeValidator, Field, WithJsonSchema

from tollhouse.governance.bounds import MAX_CHANNELS, MAX_LIST, ratio, threshold, usd
from tollhouse.web.bodies import json_type
from tollhouse.web.openapi import COMPONENT
from tollhouse.web.query import parse_time
from tollhouse.web.validation import at_most, number, text_at_most, whole
from tollhouse.windows import duration_pattern, parse_duration, zone

T = TypeVar("T")

MAX_COUNT = 2**63 - 1
MAX_THRESHOLDS = 20
DEFAULT_THRESHOLDS = (Decimal("0.8"), Decimal("1.0"))
# Amounts and ratios have at most 9 decimal places (``bounds.places``): in JSON Schema, a
# multiple of 10⁻⁹ (as its decimal spelling, which is what the API reads).
NANO = 1e-9


def _duration(value: str) -> str:
    parse_duration(text_at_most(value))
    return value


def _timezone(value: str) -> str:
    zone(text_at_most(value))
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def _not_null(value: T | None) -> T | None:
    if value is None:
        raise ValueError("cannot be null")
    return value


def _timestamp(value: Any) -> datetime:
    if isinstance(value, datetime):  # from the command line
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if not isinstance(value, str):
        raise ValueError(f"must be an RFC 3339 time string, got {json_type(value)}")
    return parse_time(value)


def _drop_null(schema: dict[str, Any]) -> None:
    """JSON Schema of a field that may be left out but not sent as ``null``."""
    options = schema.pop("anyOf", None)
    if options is None:
        return
    kept = [option for option in options if option.get("type") != "null"]
    if len(kept) == 1:
        schema.update(kept[0])
    else:
        schema["anyOf"] = kept


USD = Annotated[
    Decimal,
    BeforeValidator(number),
    AfterValidator(usd),
    WithJsonSchema(
        {
            "type": "number",
            "minimum": 0,
            "maximum": 1_000_000_000,
            "multipleOf": NANO,
            "description": "USD, echoed exactly; at most 9 decimal places; "
            "max_limit × hard_limit_ratio at most 1000000000.",
        }
    ),
]
Ratio = Annotated[
    Decimal,
    BeforeValidator(number),
    AfterValidator(ratio),
    WithJsonSchema({"type": "number", "minimum": 1, "maximum": 100, "multipleOf": NANO}),
]
Threshold = Annotated[
    Decimal,
    BeforeValidator(number),
    AfterValidator(threshold),
    WithJsonSchema({"type": "number", "exclusiveMinimum": 0, "maximum": 10, "multipleOf": NANO}),
]
# Bounds before the validator, so that they are in the JSON Schema too.
Count = Annotated[int, Field(ge=0, le=MAX_COUNT), BeforeValidator(whole)]
Parallel = Annotated[int, Field(ge=1, le=2**31 - 1), BeforeValidator(whole)]
# When the shared meter (Redis) cannot be reached: refuse (closed) or admit on this
# replica's local meter and merge back later (open). docs/deployment.md.
MeterFailure = Literal["open", "closed"]
DurationText = Annotated[
    str,
    AfterValidator(_duration),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": duration_pattern(),
            "examples": ["30s", "5m", "1h", "1d", "1w", "1M", "1Y"],
            "description": "<n><unit>, unit s m h d w M Y (m minutes, M months); at most 100 years",
        }
    ),
]
# The IANA names this host's time zone database has: their list is in the document once,
# as ``components.schemas.TimeZone`` (``time_zones``).
Timezone = Annotated[
    str, AfterValidator(_timezone), WithJsonSchema({"type": "string", COMPONENT: "TimeZone"})
]
Timestamp = Annotated[
    datetime,
    BeforeValidator(_timestamp),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
# Not blank (some character is not whitespace), and no NUL (``web.validation.no_nul``).
NAME_PATTERN = r"^[^\x00]*[^\s\x00][^\x00]*$"
Name = Annotated[
    str,
    Field(min_length=1, json_schema_extra={"pattern": NAME_PATTERN}),
    AfterValidator(_not_blank),
]
Names = Annotated[list[str], at_most(MAX_LIST), Field(max_length=MAX_LIST)]
# Policy attachments and conditions match tags (docs/policies.md): short, plain words.
MAX_TAGS = 32
Tag = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,63}$")]
Tags = Annotated[list[Tag], at_most(MAX_TAGS), Field(max_length=MAX_TAGS)]
# Update fields that may be left out but not be null.
Kept = Annotated[T | None, AfterValidator(_not_null), Field(json_schema_extra=_drop_null)]


def or_default(default: Callable[[], Any]) -> BeforeValidator:
    """Create fields: ``null`` means "not given", so it takes the default."""
    return BeforeValidator(lambda value: default() if value is None else value)


def null_is_default(default: Any = None) -> Callable[[dict[str, Any]], None]:
    """JSON Schema of a create field read by ``or_default``: its type or ``null`` (the
    default, shown as ``default`` when given)."""

    def extra(schema: dict[str, Any]) -> None:
        kept = {k: schema.pop(k) for k in ("title", "description", "default") if k in schema}
        if default is not None:
            kept["default"] = default
        inner = dict(schema)
        schema.clear()
        schema.update(anyOf=[inner, {"type": "null"}], **kept)

    return extra


def default_thresholds() -> list[Decimal]:
    return list(DEFAULT_THRESHOLDS)


Thresholds = Annotated[list[Threshold], at_most(MAX_THRESHOLDS), Field(max_length=MAX_THRESHOLDS)]
ChannelIds = Annotated[list[Name], at_most(MAX_CHANNELS), Field(max_length=MAX_CHANNELS)]


def time_zones() -> dict[str, Any]:
    """``TimeZone``: the names as one pattern, not an ``enum`` (a fuzzer tries every value
    of an enum)."""
    names = sorted(available_timezones())
    spelled = (re.sub(r"[^A-Za-z0-9_/-]", lambda m: f"[{m.group()}]", name) for name in names)
    return {
        "type": "string",
        "pattern": f"^(?:{'|'.join(spelled)})$",
        "description": "an IANA time zone name this host knows",
        "examples": ["UTC", "Europe/Paris"],
    }
