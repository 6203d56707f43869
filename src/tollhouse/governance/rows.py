"""Governance entities as the service reads them: rows (one table row each, less a
key's hash) and views (an entity with what the admin API shows beside it).

Plain frozen dataclasses, shared by the service that builds them, the answers built
from them (``answers.py``) and the command line.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from decimal import Decimal
from typing import Any, TypeVar

from sqlalchemy import Row

R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class BudgetRow:
    id: str
    max_limit: Decimal
    reset_duration: str
    calendar_aligned: bool
    timezone: str
    hard_limit_ratio: Decimal
    alert_thresholds: tuple[Decimal, ...]
    alert_channels: tuple[str, ...] | None
    last_reset: datetime
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class RateLimitRow:
    id: str
    token_max_limit: int | None
    token_reset_duration: str | None
    token_last_reset: datetime
    request_max_limit: int | None
    request_reset_duration: str | None
    request_last_reset: datetime
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class CustomerRow:
    id: str
    name: str
    budget_id: str | None
    rate_limit_id: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class TeamRow:
    id: str
    name: str
    customer_id: str | None
    budget_id: str | None
    rate_limit_id: str | None
    on_meter_failure: str | None
    tags: tuple[str, ...] | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class KeyRow:
    """A virtual key as stored, less its hash."""

    id: str
    name: str
    description: str | None
    key_hint: str
    is_active: bool
    expires_at: datetime | None
    team_id: str | None
    customer_id: str | None
    budget_id: str | None
    rate_limit_id: str | None
    allowed_models: tuple[str, ...] | None
    allowed_providers: tuple[str, ...] | None
    max_parallel_requests: int | None
    on_meter_failure: str | None
    tags: tuple[str, ...] | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class CustomerView:
    customer: CustomerRow
    budget: BudgetRow | None
    rate_limit: RateLimitRow | None
    teams: tuple[TeamRow, ...]


@dataclass(frozen=True, slots=True)
class TeamView:
    team: TeamRow
    customer: CustomerRow | None
    budget: BudgetRow | None
    rate_limit: RateLimitRow | None


@dataclass(frozen=True, slots=True)
class KeyView:
    key: KeyRow
    team: TeamRow | None
    customer: CustomerRow | None
    budget: BudgetRow | None
    rate_limit: RateLimitRow | None
    value: str | None = None  # the plaintext, only in the view create_key returns


# --- from table rows ------------------------------------------------------------------


def from_row(cls: type[R], row: Row[Any], **converted: Any) -> R:
    """A dataclass of ``cls`` from a table row, with ``converted`` fields given."""
    data = row._mapping
    names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    return cls(**{name: converted.get(name, data.get(name)) for name in names})


def budget_row(row: Row[Any]) -> BudgetRow:
    thresholds = tuple(Decimal(str(t)) for t in row.alert_thresholds)
    channels = None if row.alert_channels is None else tuple(row.alert_channels)
    return from_row(BudgetRow, row, alert_thresholds=thresholds, alert_channels=channels)


def rate_limit_row(row: Row[Any]) -> RateLimitRow:
    return from_row(RateLimitRow, row)


def customer_row(row: Row[Any]) -> CustomerRow:
    return from_row(CustomerRow, row)


def team_row(row: Row[Any]) -> TeamRow:
    return from_row(TeamRow, row, tags=_tuple(row.tags))


def key_row(row: Row[Any]) -> KeyRow:
    return from_row(
        KeyRow,
        row,
        allowed_models=_tuple(row.allowed_models),
        allowed_providers=_tuple(row.allowed_providers),
        tags=_tuple(row.tags),
    )


def _tuple(values: list[str] | None) -> tuple[str, ...] | None:
    return None if values is None else tuple(values)
