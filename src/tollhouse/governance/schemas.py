"""Governance admin API bodies: what a request may send, and what an answer holds.

Requests (``*Create``, ``*Update``, ``UsageReset``) are read by the toolkit
(``web/validation.py``: exact numbers, strict types, unknown fields ignored, a 400
naming the field); their field types and the two readings of ``null`` are in
``fields.py``. Answers (``*Read`` and their envelopes) are ``Reply`` models: every field
always present, ``null`` when unset (docs/governance-api.md), money as exact numbers and
times in the one format (``web/responses.py``). ``answers.py`` builds them from the
service's rows; the OpenAPI document is generated from both kinds (``admin/openapi.py``).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import ConfigDict, Field, RootModel, model_validator

from tollhouse.errors import ValidationFailed
from tollhouse.governance.bounds import check_budget_cap
from tollhouse.governance.fields import (
    USD,
    ChannelIds,
    Count,
    DurationText,
    Kept,
    MeterFailure,
    Name,
    Names,
    Parallel,
    Ratio,
    Tags,
    Thresholds,
    Timestamp,
    Timezone,
    default_thresholds,
    null_is_default,
    or_default,
)
from tollhouse.web.query import Filter, Query
from tollhouse.web.responses import Exact, Reply, Time
from tollhouse.web.validation import Body

BOTH_ATTACHED = "VirtualKey cannot be attached to both Team and Customer"
_TAGS = (
    "words policies attach to and match (docs/policies.md): up to 32, each 1-64 of "
    "A-Z a-z 0-9 _ . : / - starting with a letter or digit; a key also has its team's"
)

# --- requests -------------------------------------------------------------------------


class BudgetCreate(Body):
    """A budget: spend in a window may reach ``max_limit × hard_limit_ratio``."""

    max_limit: USD
    reset_duration: DurationText
    calendar_aligned: Annotated[bool, or_default(lambda: False)] = Field(
        default=False, json_schema_extra=null_is_default(False)
    )
    timezone: Annotated[Timezone, or_default(lambda: "UTC")] = Field(
        default="UTC", json_schema_extra=null_is_default("UTC")
    )
    hard_limit_ratio: Annotated[Ratio, or_default(lambda: Decimal(1))] = Field(
        default=Decimal(1), json_schema_extra=null_is_default(1)
    )
    alert_thresholds: Annotated[Thresholds, or_default(default_thresholds)] = Field(
        default_factory=default_thresholds, json_schema_extra=null_is_default([0.8, 1.0])
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


class _Named(Body):
    """A create body: its ``name`` is checked first, in the entity's words."""

    required_name: ClassVar[str]

    @model_validator(mode="before")
    @classmethod
    def _name_given(cls, data: Any) -> Any:
        name = data.get("name") if isinstance(data, dict) else None
        if name is None or (isinstance(name, str) and not name.strip()):
            raise ValidationFailed(cls.required_name, param="name")
        return data


class CustomerCreate(_Named):
    required_name = "Customer name is required"

    name: Name
    budget: BudgetCreate | None = None
    rate_limit: RateLimitCreate | None = None


class CustomerUpdate(Body):
    name: Kept[Name] = None
    budget: BudgetUpdate | None = None
    rate_limit: RateLimitUpdate | None = None


class TeamCreate(CustomerCreate):
    required_name = "Team name is required"

    customer_id: str | None = None
    on_meter_failure: MeterFailure | None = None
    tags: Tags | None = Field(default=None, description=_TAGS)


class TeamUpdate(CustomerUpdate):
    customer_id: str | None = None
    on_meter_failure: MeterFailure | None = None
    tags: Tags | None = Field(default=None, description=_TAGS)


# A key belongs to a team or a customer, not both (``BOTH_ATTACHED``).
_ONE_PARENT = ConfigDict(
    json_schema_extra={
        "not": {
            "properties": {"team_id": {"type": "string"}, "customer_id": {"type": "string"}},
            "required": ["team_id", "customer_id"],
        }
    }
)


class _OneParent(Body):
    """A key belongs to a team or a customer, not both (checked before any lookup)."""

    model_config = _ONE_PARENT

    @model_validator(mode="after")
    def _one_parent(self) -> Self:
        team_id, customer_id = getattr(self, "team_id", None), getattr(self, "customer_id", None)
        if team_id is not None and customer_id is not None:
            raise ValidationFailed(BOTH_ATTACHED, param="team_id")
        return self


class VirtualKeyCreate(_OneParent, _Named):
    required_name = "Virtual key name is required"

    name: Name
    description: str | None = None
    is_active: Annotated[bool, or_default(lambda: True)] = Field(
        default=True, json_schema_extra=null_is_default(True)
    )
    expires_at: Timestamp | None = None
    allowed_models: Names | None = None
    allowed_providers: Names | None = None
    max_parallel_requests: Parallel | None = None
    on_meter_failure: MeterFailure | None = None
    tags: Tags | None = Field(default=None, description=_TAGS)
    team_id: str | None = None
    customer_id: str | None = None
    budget: BudgetCreate | None = None
    rate_limit: RateLimitCreate | None = None


class VirtualKeyUpdate(_OneParent):
    name: Kept[Name] = None
    description: str | None = None
    is_active: Kept[bool] = None
    expires_at: Timestamp | None = None
    allowed_models: Names | None = None
    allowed_providers: Names | None = None
    max_parallel_requests: Parallel | None = None
    on_meter_failure: MeterFailure | None = None
    tags: Tags | None = Field(default=None, description=_TAGS)
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

    @model_validator(mode="after")
    def _exactly_one(self) -> Self:
        given = [name for name, value in self.given().items() if value is not None]
        if len(given) != 1:
            raise ValidationFailed(
                "give exactly one of virtual_key_id, team_id, customer_id", param="virtual_key_id"
            )
        return self


class TeamsQuery(Query):
    customer_id: Filter = Field(default=None, description="only this customer's teams")


class VirtualKeysQuery(Query):
    team_id: Filter = Field(default=None, description="only this team's keys")
    customer_id: Filter = Field(default=None, description="only this customer's keys")


class UsageStatsQuery(Query):
    virtual_key_id: Filter = Field(default=None, description="only this key")


# --- answers --------------------------------------------------------------------------

_METER_FAILURE = (
    "when Redis is unreachable: admit on the replica's local meter (open) or refuse "
    "with 503 (closed); null: the operator's default"
)


class BudgetRead(Reply):
    id: str
    max_limit: Exact = Field(description="USD, exact (never rounded)")
    reset_duration: str
    calendar_aligned: bool
    timezone: str
    hard_limit_ratio: Exact
    alert_thresholds: list[Exact]
    alert_channels: list[str] | None = Field(
        description="notification channel ids; null: the default channels"
    )
    current_usage: Exact = Field(description="spend in the current window (USD)")
    last_reset: Time = Field(description="start of the current window")
    created_at: Time
    updated_at: Time


class RateLimitRead(Reply):
    id: str
    token_max_limit: int | None
    token_reset_duration: str | None
    token_current_usage: int
    token_last_reset: Time
    request_max_limit: int | None
    request_reset_duration: str | None
    request_current_usage: int
    request_last_reset: Time
    created_at: Time
    updated_at: Time


class CustomerRef(Reply):
    """A customer embedded one level down: ids, no nested objects."""

    id: str
    name: str
    budget_id: str | None
    rate_limit_id: str | None
    teams: None
    virtual_keys: None
    created_at: Time
    updated_at: Time


class TeamRef(Reply):
    """A team embedded one level down: ids (``customer_id`` included), no nested objects."""

    id: str
    name: str
    customer_id: str | None
    budget_id: str | None
    rate_limit_id: str | None
    on_meter_failure: MeterFailure | None = Field(description=_METER_FAILURE)
    virtual_keys: None
    created_at: Time
    updated_at: Time


class CustomerRead(Reply):
    id: str
    name: str
    budget_id: str | None
    rate_limit_id: str | None
    teams: list[TeamRef]
    virtual_keys: None
    budget: BudgetRead | None
    rate_limit: RateLimitRead | None
    created_at: Time
    updated_at: Time


class TeamRead(Reply):
    id: str
    name: str
    customer_id: str | None
    budget_id: str | None
    rate_limit_id: str | None
    on_meter_failure: MeterFailure | None = Field(description=_METER_FAILURE)
    tags: list[str] | None = Field(description="null: none")
    virtual_keys: None
    customer: CustomerRef | None
    budget: BudgetRead | None
    rate_limit: RateLimitRead | None
    created_at: Time
    updated_at: Time


class VirtualKeyRead(Reply):
    id: str
    name: str
    description: str | None
    value: str = Field(
        description="the key itself in the create response only (shown once); "
        "elsewhere its hint, e.g. th-AbCd…wXyZ"
    )
    is_active: bool
    expires_at: Time | None
    allowed_models: list[str] | None = Field(description="null: every model")
    allowed_providers: list[str] | None = Field(description="null: every provider")
    max_parallel_requests: int | None
    on_meter_failure: MeterFailure | None = Field(description=_METER_FAILURE)
    tags: list[str] | None = Field(description="null: none")
    team_id: str | None
    customer_id: str | None
    budget_id: str | None
    rate_limit_id: str | None
    team: TeamRef | None
    customer: CustomerRef | None
    budget: BudgetRead | None
    rate_limit: RateLimitRead | None
    created_at: Time
    updated_at: Time


class Message(Reply):
    message: str


class CustomerList(Reply):
    customers: list[CustomerRead]
    count: int


class CustomerOne(Reply):
    customer: CustomerRead


class CustomerWritten(Reply):
    message: str
    customer: CustomerRead


class TeamList(Reply):
    teams: list[TeamRead]
    count: int


class TeamOne(Reply):
    team: TeamRead


class TeamWritten(Reply):
    message: str
    team: TeamRead


class VirtualKeyList(Reply):
    virtual_keys: list[VirtualKeyRead]
    count: int


class VirtualKeyOne(Reply):
    virtual_key: VirtualKeyRead


class VirtualKeyWritten(Reply):
    message: str
    virtual_key: VirtualKeyRead


class KeyUsage(Reply):
    """One key's own counters (its team's and customer's are in their entities)."""

    virtual_key_id: str
    name: str
    tokens_current_usage: int | None
    requests_current_usage: int | None
    tokens_last_reset: Time | None
    requests_last_reset: Time | None
    token_max_limit: int | None
    request_max_limit: int | None
    budget_current_usage: Exact | None
    budget_max_limit: Exact | None
    budget_last_reset: Time | None


class UsageStatsAll(Reply):
    usage_stats: list[KeyUsage]


class UsageStatsOne(Reply):
    virtual_key_id: str
    usage_stats: KeyUsage


class UsageStats(RootModel[UsageStatsAll | UsageStatsOne]):
    """Every key's counters, or (``?virtual_key_id=``) one key's."""


class PluginStats(Reply):
    loaded: bool = Field(description="whether an admission engine runs in this process")
    counters_count: int


class DatabaseStats(Reply):
    virtual_keys_count: int
    teams_count: int
    customers_count: int
    budgets_count: int
    rate_limits_count: int
    version: int = Field(description="the governance change version")


class DebugStats(Reply):
    plugin_stats: PluginStats
    database_stats: DatabaseStats
    timestamp: Time


class CounterRead(Reply):
    """One live counter; money (``kind`` budget or credits) as a decimal string of USD."""

    kind: Literal["budget", "tokens", "requests", "parallel", "credits"]
    id: str
    scope: str
    scope_id: str
    limit: str | int
    committed: str | int
    reserved: str | int
    window_start: Time | None
    window_end: Time | None


class DebugCounters(Reply):
    counters: list[CounterRead]
    count: int
    timestamp: Time


class DatabaseHealthy(Reply):
    status: Literal["healthy"]


class DatabaseUnhealthy(Reply):
    status: Literal["unhealthy"]
    error: str


class HealthChecks(Reply):
    database: DatabaseHealthy | DatabaseUnhealthy


class Health(Reply):
    status: Literal["healthy", "unhealthy"]
    timestamp: Time
    checks: HealthChecks
