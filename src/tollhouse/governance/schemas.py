"""Governance admin API bodies: strict parsing of requests, JSON shapes of responses.

Requests are decoded with ``json.loads(raw, parse_float=Decimal)`` so that no amount
ever passes through a binary float, then validated by Pydantic in strict mode: a JSON
type that does not match (``"10"`` for a number, ``1`` for a boolean, ``true`` for an
integer) is a 400, never coerced. Unknown fields are ignored, as Bifrost does.

``null`` reads differently in the two kinds of body (docs/governance-api.md):

- **create** — ``null`` is the same as leaving the field out (Bifrost's pointer fields);
- **update** — a field left out is unchanged; ``null`` clears a field that may be empty
  (``description``, ``team_id``, ``allowed_models``, ``budget`` …) and is a 400 for one
  that may not (``name``, ``is_active``, ``budget.max_limit`` …).

Responses are plain dicts for ``orjson``; USD amounts and ratios are
``orjson.Fragment`` numbers written digit for digit from the ``Decimal``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol, TypeVar

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import ErrorDetails

from tollhouse.errors import InvalidJSON, ValidationFailed
from tollhouse.governance.bounds import (
    MAX_CHANNELS,
    MAX_LIST,
    at_most,
    check_budget_cap,
    json_type,
    no_nul,
    number,
    preview,
    ratio,
    short,
    text_at_most,
    threshold,
    usd,
    whole,
)
from tollhouse.money import format_usd
from tollhouse.web.bodies import check_surrogates
from tollhouse.windows import duration_pattern, parse_duration, window_at, zone

if TYPE_CHECKING:
    from tollhouse.governance.service import (
        BudgetRow,
        CustomerRow,
        CustomerView,
        KeyView,
        RateLimitRow,
        TeamRow,
        TeamView,
    )

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

MAX_COUNT = 2**63 - 1
MAX_THRESHOLDS = 20
DEFAULT_THRESHOLDS = (Decimal("0.8"), Decimal("1.0"))
# Amounts and ratios have at most 9 decimal places (``bounds.places``): in JSON Schema, a
# multiple of 10⁻⁹ (as its decimal spelling, which is what the API reads).
NANO = 1e-9


# --- field types ----------------------------------------------------------------------


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


def parse_timestamp(value: Any) -> datetime:
    """RFC 3339 / ISO 8601 (``2027-01-01T00:00:00Z``, ``2027-01-01``); no offset = UTC."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(
                f"must be an RFC 3339 time such as 2027-01-01T00:00:00Z, got {value[:64]!r}"
            ) from None
    else:
        raise ValueError(f"must be an RFC 3339 time string, got {json_type(value)}")
    try:
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00+01:00 is before year 1 in UTC
        raise ValueError(f"is out of range ({value})") from None


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
# The IANA names this host's time zone database has: the document puts their list once,
# in ``components.schemas.TimeZone``, where this marker is (``openapi.no_nul``).
ZONE_MARK = "x-time-zone"
Timezone = Annotated[
    str, AfterValidator(_timezone), WithJsonSchema({"type": "string", ZONE_MARK: True})
]
Timestamp = Annotated[
    datetime,
    BeforeValidator(parse_timestamp),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
# Not blank (some character is not whitespace), and no NUL (``bounds.no_nul``).
NAME_PATTERN = r"^[^\x00]*[^\s\x00][^\x00]*$"
Name = Annotated[
    str,
    Field(min_length=1, json_schema_extra={"pattern": NAME_PATTERN}),
    AfterValidator(_not_blank),
]
Names = Annotated[list[str], at_most(MAX_LIST), Field(max_length=MAX_LIST)]
# Update fields that may be left out but not be null.
Kept = Annotated[T | None, AfterValidator(_not_null), Field(json_schema_extra=_drop_null)]


def _or(default: Callable[[], Any]) -> BeforeValidator:
    """Create fields: ``null`` means "not given", so it takes the default."""
    return BeforeValidator(lambda value: default() if value is None else value)


def null_is_default(default: Any = None) -> Callable[[dict[str, Any]], None]:
    """JSON Schema of a create field read by ``_or``: its type or ``null`` (the default,
    shown as ``default`` when given)."""

    def extra(schema: dict[str, Any]) -> None:
        kept = {k: schema.pop(k) for k in ("title", "description", "default") if k in schema}
        if default is not None:
            kept["default"] = default
        inner = dict(schema)
        schema.clear()
        schema.update(anyOf=[inner, {"type": "null"}], **kept)

    return extra


def _thresholds() -> list[Decimal]:
    return list(DEFAULT_THRESHOLDS)


Thresholds = Annotated[list[Threshold], at_most(MAX_THRESHOLDS), Field(max_length=MAX_THRESHOLDS)]
ChannelIds = Annotated[list[Name], at_most(MAX_CHANNELS), Field(max_length=MAX_CHANNELS)]


# --- request bodies -------------------------------------------------------------------


class Body(BaseModel):
    """An admin API body: strict types, unknown fields ignored, ``given()`` for merges."""

    model_config = ConfigDict(strict=True, extra="ignore")

    def given(self) -> dict[str, Any]:
        """The fields the client sent (``null`` included), by name."""
        return {name: getattr(self, name) for name in self.model_fields_set}


class BudgetCreate(Body):
    """A budget: spend in a window may reach ``max_limit × hard_limit_ratio``."""

    max_limit: USD
    reset_duration: DurationText
    calendar_aligned: Annotated[bool, _or(lambda: False)] = Field(
        default=False, json_schema_extra=null_is_default(False)
    )
    timezone: Annotated[Timezone, _or(lambda: "UTC")] = Field(
        default="UTC", json_schema_extra=null_is_default("UTC")
    )
    hard_limit_ratio: Annotated[Ratio, _or(lambda: Decimal(1))] = Field(
        default=Decimal(1), json_schema_extra=null_is_default(1)
    )
    alert_thresholds: Annotated[Thresholds, _or(_thresholds)] = Field(
        default_factory=_thresholds, json_schema_extra=null_is_default([0.8, 1.0])
    )
    alert_channels: ChannelIds | None = None  # channel ids; null: the default channels

    @model_validator(mode="after")
    def _cap(self) -> BudgetCreate:
        field = "hard_limit_ratio" if "hard_limit_ratio" in self.model_fields_set else "max_limit"
        check_budget_cap(self.max_limit, self.hard_limit_ratio, field)
        return self


class BudgetUpdate(Body):
    """Fields merge into the existing budget; a missing budget is created (it then
    needs ``max_limit`` and ``reset_duration``)."""

    max_limit: Kept[USD] = None
    reset_duration: Kept[DurationText] = None
    calendar_aligned: Kept[bool] = None
    timezone: Kept[Timezone] = None
    hard_limit_ratio: Kept[Ratio] = None
    alert_thresholds: Kept[Thresholds] = None
    alert_channels: ChannelIds | None = None


class _RateLimitFields(Body):
    token_max_limit: Count | None = None
    token_reset_duration: DurationText | None = None
    request_max_limit: Count | None = None
    request_reset_duration: DurationText | None = None


def check_rate_limit(values: dict[str, Any]) -> None:
    """Each limit needs its reset duration (after a merge, for updates)."""
    for kind in ("token", "request"):
        if values.get(f"{kind}_max_limit") is not None and not values.get(f"{kind}_reset_duration"):
            raise ValidationFailed(
                f"rate_limit.{kind}_reset_duration is required when {kind}_max_limit is set",
                param=f"rate_limit.{kind}_reset_duration",
            )


def _needs_duration(*, update: bool) -> dict[str, Any]:
    """JSON Schema of ``check_rate_limit``: a limit set (an integer) has its duration.

    A create gives both. An update is checked once merged into the stored rate limit,
    which a schema cannot see; it describes an update of an entity that has a rate limit
    with both limits set: clearing a duration (``null``) clears its limit too."""
    rules = []
    for kind in ("token", "request"):
        limit, duration = f"{kind}_max_limit", f"{kind}_reset_duration"
        if update:
            rule = {
                "if": {"properties": {duration: {"type": "null"}}, "required": [duration]},
                "then": {"properties": {limit: {"type": "null"}}, "required": [limit]},
            }
        else:
            rule = {
                "if": {"properties": {limit: {"type": "integer"}}, "required": [limit]},
                "then": {"properties": {duration: {"type": "string"}}, "required": [duration]},
            }
        rules.append(rule)
    return {"allOf": rules}


class RateLimitCreate(_RateLimitFields):
    """Token and request limits per window; each limit needs its reset duration."""

    model_config = ConfigDict(json_schema_extra=_needs_duration(update=False))

    @model_validator(mode="after")
    def _durations(self) -> RateLimitCreate:
        check_rate_limit(self.given())
        return self


class RateLimitUpdate(_RateLimitFields):
    """Fields merge into the existing rate limit; ``null`` removes that limit. A limit
    set needs its reset duration once merged: given here, or stored."""

    model_config = ConfigDict(json_schema_extra=_needs_duration(update=True))


class CustomerCreate(Body):
    name: Name
    budget: BudgetCreate | None = None
    rate_limit: RateLimitCreate | None = None


class CustomerUpdate(Body):
    name: Kept[Name] = None
    budget: BudgetUpdate | None = None
    rate_limit: RateLimitUpdate | None = None


class TeamCreate(CustomerCreate):
    customer_id: str | None = None
    on_meter_failure: MeterFailure | None = None


class TeamUpdate(CustomerUpdate):
    customer_id: str | None = None
    on_meter_failure: MeterFailure | None = None


# A key belongs to a team or a customer, not both (``BOTH_ATTACHED``).
_ONE_PARENT = ConfigDict(
    json_schema_extra={
        "not": {
            "properties": {"team_id": {"type": "string"}, "customer_id": {"type": "string"}},
            "required": ["team_id", "customer_id"],
        }
    }
)


class VirtualKeyCreate(Body):
    model_config = _ONE_PARENT

    name: Name
    description: str | None = None
    is_active: Annotated[bool, _or(lambda: True)] = Field(
        default=True, json_schema_extra=null_is_default(True)
    )
    expires_at: Timestamp | None = None
    allowed_models: Names | None = None
    allowed_providers: Names | None = None
    max_parallel_requests: Parallel | None = None
    on_meter_failure: MeterFailure | None = None
    team_id: str | None = None
    customer_id: str | None = None
    budget: BudgetCreate | None = None
    rate_limit: RateLimitCreate | None = None


class VirtualKeyUpdate(Body):
    model_config = _ONE_PARENT

    name: Kept[Name] = None
    description: str | None = None
    is_active: Kept[bool] = None
    expires_at: Timestamp | None = None
    allowed_models: Names | None = None
    allowed_providers: Names | None = None
    max_parallel_requests: Parallel | None = None
    on_meter_failure: MeterFailure | None = None
    team_id: str | None = None
    customer_id: str | None = None
    budget: BudgetUpdate | None = None
    rate_limit: RateLimitUpdate | None = None


class UsageReset(Body):
    """Exactly one of the three: whose counters to zero."""

    model_config = ConfigDict(
        json_schema_extra={
            "oneOf": [
                {"properties": {name: {"type": "string"}}, "required": [name]}
                for name in ("virtual_key_id", "team_id", "customer_id")
            ]
        }
    )

    virtual_key_id: str | None = None
    team_id: str | None = None
    customer_id: str | None = None


REQUEST_MODELS: tuple[type[BaseModel], ...] = (
    CustomerCreate,
    CustomerUpdate,
    TeamCreate,
    TeamUpdate,
    VirtualKeyCreate,
    VirtualKeyUpdate,
    UsageReset,
)

_REQUIRED_NAME = {
    CustomerCreate: "Customer name is required",
    TeamCreate: "Team name is required",
    VirtualKeyCreate: "Virtual key name is required",
}
BOTH_ATTACHED = "VirtualKey cannot be attached to both Team and Customer"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _integer(text: str) -> int | Decimal:
    """A JSON integer; a very long one as ``Decimal``, which the field's own check then
    refuses by name (``int()`` fails past 4300 digits, and no field wants 100)."""
    return int(text) if len(text) <= 100 else Decimal(text)


def load_json(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object, floats as ``Decimal``; ``InvalidJSON`` otherwise."""
    if not raw.strip():
        raise InvalidJSON("Invalid JSON: the request body is empty; send a JSON object")
    try:
        data = json.loads(
            raw, parse_float=Decimal, parse_int=_integer, parse_constant=_reject_constant
        )
    except json.JSONDecodeError as exc:
        raise InvalidJSON(
            f"Invalid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    except (ValueError, RecursionError) as exc:
        raise InvalidJSON(f"Invalid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InvalidJSON(f"Invalid JSON: the body must be a JSON object, got {json_type(data)}")
    check_surrogates(raw, data)
    return data


def parse(model: type[M], data: dict[str, Any]) -> M:
    """Validate a decoded body against ``model``; every problem is a 400 naming the field."""
    no_nul(data)
    required = _REQUIRED_NAME.get(model)
    if required is not None:
        name = data.get("name")
        if name is None or (isinstance(name, str) and not name.strip()):
            raise ValidationFailed(required, param="name")
    try:
        body = model.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        raise ValidationFailed(
            short("; ".join(_describe(error) for error in errors[:5])),
            param=preview(_location(errors[0]["loc"])) or None,
        ) from None
    if isinstance(body, VirtualKeyCreate | VirtualKeyUpdate) and (
        body.team_id is not None and body.customer_id is not None
    ):
        raise ValidationFailed(BOTH_ATTACHED, param="team_id")
    if isinstance(body, UsageReset):
        given = [k for k, v in body.given().items() if v is not None]
        if len(given) != 1:
            raise ValidationFailed(
                "give exactly one of virtual_key_id, team_id, customer_id", param="virtual_key_id"
            )
    return body


def parse_body(model: type[M], raw: bytes) -> M:
    return parse(model, load_json(raw))


_MESSAGES = {
    "missing": "is required",
    "string_type": "must be a string",
    "int_type": "must be an integer",
    "bool_type": "must be true or false",
    "list_type": "must be a list",
    "dict_type": "must be an object",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
    "string_too_short": "must not be empty",
    "too_long": "has too many items",
}


def _location(loc: tuple[int | str, ...]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def _describe(error: ErrorDetails) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    if kind == "value_error":
        message = str(ctx.get("error", error["msg"]))
    elif kind in ("greater_than_equal", "less_than_equal"):
        bound = "at least" if kind == "greater_than_equal" else "at most"
        message = f"must be {bound} {ctx.get('ge', ctx.get('le'))}"
    elif kind in _MESSAGES:
        message = _MESSAGES[kind]
        if kind.endswith("_type"):
            message += f", got {json_type(error['input'])}"
    else:
        message = error["msg"][:1].lower() + error["msg"][1:]
    where = _location(error["loc"])
    if not where:
        return message
    # "budget.max_limit cannot be negative", but "budget.reset_duration: Invalid …".
    return f"{where}: {message}" if message[:1].isupper() else f"{where} {message}"


# --- responses ------------------------------------------------------------------------


class UsageMeter(Protocol):
    """Live counters (the admission engine, ``app.state.admission``); a window start of
    ``None`` means no counter is loaded yet."""

    def budget_usage(self, budget_id: str) -> tuple[Decimal, datetime | None]: ...

    def rate_usage(
        self, rate_limit_id: str
    ) -> tuple[int, int, datetime | None, datetime | None]: ...


def number_json(value: Decimal) -> orjson.Fragment:
    """A ``Decimal`` as a raw JSON number, digit for digit (``1.0`` → ``1``)."""
    return orjson.Fragment(format_usd(value).encode())


def rfc3339(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _window_start(
    duration: str | None,
    anchor: datetime,
    *,
    calendar_aligned: bool = False,
    timezone: str = "UTC",
) -> datetime:
    """Where the current window began, from the stored settings (no counter loaded)."""
    if duration is None:
        return anchor
    window = window_at(
        datetime.now(UTC),
        parse_duration(duration),
        anchor,
        calendar_aligned=calendar_aligned,
        tz=zone(timezone),
    )
    return window.start


def budget_usage(budget: BudgetRow, meter: UsageMeter | None) -> tuple[Decimal, datetime]:
    """Spend in the current window and its start; 0 when nothing is counted yet."""
    spent, start = meter.budget_usage(budget.id) if meter is not None else (Decimal(0), None)
    if start is None:
        start = _window_start(
            budget.reset_duration,
            budget.last_reset,
            calendar_aligned=budget.calendar_aligned,
            timezone=budget.timezone,
        )
    return spent, start


def rate_usage(
    limit: RateLimitRow, meter: UsageMeter | None
) -> tuple[int, int, datetime, datetime]:
    """Tokens and requests in the current windows, and the windows' starts."""
    tokens, requests, token_start, request_start = (
        meter.rate_usage(limit.id) if meter is not None else (0, 0, None, None)
    )
    if token_start is None:
        token_start = _window_start(limit.token_reset_duration, limit.token_last_reset)
    if request_start is None:
        request_start = _window_start(limit.request_reset_duration, limit.request_last_reset)
    return tokens, requests, token_start, request_start


def budget_json(budget: BudgetRow, meter: UsageMeter | None) -> dict[str, Any]:
    spent, window_start = budget_usage(budget, meter)
    return {
        "id": budget.id,
        "max_limit": number_json(budget.max_limit),
        "reset_duration": budget.reset_duration,
        "calendar_aligned": budget.calendar_aligned,
        "timezone": budget.timezone,
        "hard_limit_ratio": number_json(budget.hard_limit_ratio),
        "alert_thresholds": [number_json(t) for t in budget.alert_thresholds],
        "alert_channels": None if budget.alert_channels is None else list(budget.alert_channels),
        "current_usage": number_json(spent),
        "last_reset": rfc3339(window_start),
        "created_at": rfc3339(budget.created_at),
        "updated_at": rfc3339(budget.updated_at),
    }


def rate_limit_json(limit: RateLimitRow, meter: UsageMeter | None) -> dict[str, Any]:
    tokens, requests, token_start, request_start = rate_usage(limit, meter)
    return {
        "id": limit.id,
        "token_max_limit": limit.token_max_limit,
        "token_reset_duration": limit.token_reset_duration,
        "token_current_usage": tokens,
        "token_last_reset": rfc3339(token_start),
        "request_max_limit": limit.request_max_limit,
        "request_reset_duration": limit.request_reset_duration,
        "request_current_usage": requests,
        "request_last_reset": rfc3339(request_start),
        "created_at": rfc3339(limit.created_at),
        "updated_at": rfc3339(limit.updated_at),
    }


# Unset links and unset lists are null, never missing (docs/governance-api.md): Bifrost's clients
# read ``team["customer_id"]`` and ``team["customer"]`` without checking for the key.
# Every entity therefore has the same keys whatever is set; embedded ("plain") objects
# carry ids and ``null`` in place of what they would embed one level further down.


def _attach(
    body: dict[str, Any],
    budget: BudgetRow | None,
    limit: RateLimitRow | None,
    meter: UsageMeter | None,
) -> None:
    body["budget"] = budget_json(budget, meter) if budget is not None else None
    body["rate_limit"] = rate_limit_json(limit, meter) if limit is not None else None


def plain_customer_json(customer: CustomerRow) -> dict[str, Any]:
    """A customer embedded one level down: ids, no nested objects."""
    return {
        "id": customer.id,
        "name": customer.name,
        "budget_id": customer.budget_id,
        "rate_limit_id": customer.rate_limit_id,
        "teams": None,
        "virtual_keys": None,
        "created_at": rfc3339(customer.created_at),
        "updated_at": rfc3339(customer.updated_at),
    }


def plain_team_json(team: TeamRow) -> dict[str, Any]:
    """A team embedded one level down: ids (``customer_id`` included), no nested objects."""
    return {
        "id": team.id,
        "name": team.name,
        "customer_id": team.customer_id,
        "budget_id": team.budget_id,
        "rate_limit_id": team.rate_limit_id,
        "on_meter_failure": team.on_meter_failure,
        "virtual_keys": None,
        "created_at": rfc3339(team.created_at),
        "updated_at": rfc3339(team.updated_at),
    }


def customer_json(view: CustomerView, meter: UsageMeter | None) -> dict[str, Any]:
    body = plain_customer_json(view.customer)
    _attach(body, view.budget, view.rate_limit, meter)
    body["teams"] = [plain_team_json(team) for team in view.teams]
    return _timestamps_last(body)


def team_json(view: TeamView, meter: UsageMeter | None) -> dict[str, Any]:
    body = plain_team_json(view.team)
    customer = view.customer
    body["customer"] = plain_customer_json(customer) if customer is not None else None
    _attach(body, view.budget, view.rate_limit, meter)
    return _timestamps_last(body)


def key_json(view: KeyView, meter: UsageMeter | None) -> dict[str, Any]:
    """A virtual key; ``value`` is the plaintext only right after creation, else the hint."""
    key = view.key
    body: dict[str, Any] = {"id": key.id, "name": key.name}
    body["description"] = key.description or None
    body["value"] = view.value if view.value is not None else key.key_hint
    body["is_active"] = key.is_active
    body["expires_at"] = rfc3339(key.expires_at)
    body["allowed_models"] = _list_or_null(key.allowed_models)
    body["allowed_providers"] = _list_or_null(key.allowed_providers)
    body["max_parallel_requests"] = key.max_parallel_requests
    body["on_meter_failure"] = key.on_meter_failure
    body["team_id"] = key.team_id
    body["customer_id"] = key.customer_id
    body["budget_id"] = key.budget_id
    body["rate_limit_id"] = key.rate_limit_id
    body["team"] = plain_team_json(view.team) if view.team is not None else None
    body["customer"] = plain_customer_json(view.customer) if view.customer is not None else None
    _attach(body, view.budget, view.rate_limit, meter)
    body["created_at"] = rfc3339(key.created_at)
    body["updated_at"] = rfc3339(key.updated_at)
    return body


def _list_or_null(values: tuple[str, ...] | None) -> list[str] | None:
    return None if values is None else list(values)


def _timestamps_last(body: dict[str, Any]) -> dict[str, Any]:
    for name in ("created_at", "updated_at"):
        body[name] = body.pop(name)
    return body


def key_usage_json(view: KeyView, meter: UsageMeter | None) -> dict[str, Any]:
    """One key's counters for ``usage-stats``: budget spend and rate-limit usage."""
    body: dict[str, Any] = {"virtual_key_id": view.key.id, "name": view.key.name}
    if view.rate_limit is not None:
        tokens, requests, token_start, request_start = rate_usage(view.rate_limit, meter)
        body.update(
            tokens_current_usage=tokens,
            requests_current_usage=requests,
            tokens_last_reset=rfc3339(token_start),
            requests_last_reset=rfc3339(request_start),
            token_max_limit=view.rate_limit.token_max_limit,
            request_max_limit=view.rate_limit.request_max_limit,
        )
    else:
        body.update(
            tokens_current_usage=None,
            requests_current_usage=None,
            tokens_last_reset=None,
            requests_last_reset=None,
            token_max_limit=None,
            request_max_limit=None,
        )
    if view.budget is not None:
        spent, window_start = budget_usage(view.budget, meter)
        body.update(
            budget_current_usage=number_json(spent),
            budget_max_limit=number_json(view.budget.max_limit),
            budget_last_reset=rfc3339(window_start),
        )
    else:
        body.update(budget_current_usage=None, budget_max_limit=None, budget_last_reset=None)
    return body
