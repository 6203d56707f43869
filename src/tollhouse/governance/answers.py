"""The admin API's answers about governance entities, built from the service's rows and
the live counters (``schemas``' ``*Read`` models).

Spend and window starts come from the admission engine's counters when one runs in the
process (``UsageMeter``), else they are 0 and the current window computed from the
stored anchor. Unset links and lists are ``null``, never missing: Bifrost's clients read
``team["customer_id"]`` and ``team["customer"]`` without checking for the key, so every
entity has the same keys whatever is set; embedded objects carry ids and ``null`` in
place of what they would embed one level further down.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Protocol

from tollhouse.governance.rows import (
    BudgetRow,
    CustomerRow,
    CustomerView,
    KeyView,
    RateLimitRow,
    TeamRow,
    TeamView,
)
from tollhouse.governance.schemas import (
    BudgetRead,
    CustomerRead,
    CustomerRef,
    KeyUsage,
    RateLimitRead,
    TeamRead,
    TeamRef,
    VirtualKeyRead,
)
from tollhouse.windows import parse_duration, window_at, zone


class UsageMeter(Protocol):
    """Live counters (the admission engine); a window start of ``None`` means no counter
    is loaded yet."""

    def budget_usage(self, budget_id: str) -> tuple[Decimal, datetime | None]: ...

    def rate_usage(
        self, rate_limit_id: str
    ) -> tuple[int, int, datetime | None, datetime | None]: ...


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


def budget_read(budget: BudgetRow | None, meter: UsageMeter | None) -> BudgetRead | None:
    if budget is None:
        return None
    spent, window_start = budget_usage(budget, meter)
    return BudgetRead(
        id=budget.id,
        max_limit=budget.max_limit,
        reset_duration=budget.reset_duration,
        calendar_aligned=budget.calendar_aligned,
        timezone=budget.timezone,
        hard_limit_ratio=budget.hard_limit_ratio,
        alert_thresholds=list(budget.alert_thresholds),
        alert_channels=None if budget.alert_channels is None else list(budget.alert_channels),
        current_usage=spent,
        last_reset=window_start,
        created_at=budget.created_at,
        updated_at=budget.updated_at,
    )


def rate_limit_read(limit: RateLimitRow | None, meter: UsageMeter | None) -> RateLimitRead | None:
    if limit is None:
        return None
    tokens, requests, token_start, request_start = rate_usage(limit, meter)
    return RateLimitRead(
        id=limit.id,
        token_max_limit=limit.token_max_limit,
        token_reset_duration=limit.token_reset_duration,
        token_current_usage=tokens,
        token_last_reset=token_start,
        request_max_limit=limit.request_max_limit,
        request_reset_duration=limit.request_reset_duration,
        request_current_usage=requests,
        request_last_reset=request_start,
        created_at=limit.created_at,
        updated_at=limit.updated_at,
    )


def customer_ref(customer: CustomerRow) -> CustomerRef:
    return CustomerRef(
        id=customer.id,
        name=customer.name,
        budget_id=customer.budget_id,
        rate_limit_id=customer.rate_limit_id,
        teams=None,
        virtual_keys=None,
        created_at=customer.created_at,
        updated_at=customer.updated_at,
    )


def team_ref(team: TeamRow) -> TeamRef:
    return TeamRef(
        id=team.id,
        name=team.name,
        customer_id=team.customer_id,
        budget_id=team.budget_id,
        rate_limit_id=team.rate_limit_id,
        on_meter_failure=team.on_meter_failure,  # type: ignore[arg-type]  # checked on write
        virtual_keys=None,
        created_at=team.created_at,
        updated_at=team.updated_at,
    )


def customer_read(view: CustomerView, meter: UsageMeter | None) -> CustomerRead:
    customer = view.customer
    return CustomerRead(
        id=customer.id,
        name=customer.name,
        budget_id=customer.budget_id,
        rate_limit_id=customer.rate_limit_id,
        teams=[team_ref(team) for team in view.teams],
        virtual_keys=None,
        budget=budget_read(view.budget, meter),
        rate_limit=rate_limit_read(view.rate_limit, meter),
        created_at=customer.created_at,
        updated_at=customer.updated_at,
    )


def team_read(view: TeamView, meter: UsageMeter | None) -> TeamRead:
    team = view.team
    return TeamRead(
        id=team.id,
        name=team.name,
        customer_id=team.customer_id,
        budget_id=team.budget_id,
        rate_limit_id=team.rate_limit_id,
        on_meter_failure=team.on_meter_failure,  # type: ignore[arg-type]  # checked on write
        tags=_list_or_null(team.tags),
        virtual_keys=None,
        customer=None if view.customer is None else customer_ref(view.customer),
        budget=budget_read(view.budget, meter),
        rate_limit=rate_limit_read(view.rate_limit, meter),
        created_at=team.created_at,
        updated_at=team.updated_at,
    )


def key_read(view: KeyView, meter: UsageMeter | None) -> VirtualKeyRead:
    """A virtual key; ``value`` is the plaintext only right after creation, else the hint."""
    key = view.key
    return VirtualKeyRead(
        id=key.id,
        name=key.name,
        description=key.description or None,
        value=view.value if view.value is not None else key.key_hint,
        is_active=key.is_active,
        expires_at=key.expires_at,
        allowed_models=_list_or_null(key.allowed_models),
        allowed_providers=_list_or_null(key.allowed_providers),
        max_parallel_requests=key.max_parallel_requests,
        on_meter_failure=key.on_meter_failure,  # type: ignore[arg-type]  # checked on write
        tags=_list_or_null(key.tags),
        team_id=key.team_id,
        customer_id=key.customer_id,
        budget_id=key.budget_id,
        rate_limit_id=key.rate_limit_id,
        team=None if view.team is None else team_ref(view.team),
        customer=None if view.customer is None else customer_ref(view.customer),
        budget=budget_read(view.budget, meter),
        rate_limit=rate_limit_read(view.rate_limit, meter),
        created_at=key.created_at,
        updated_at=key.updated_at,
    )


def _list_or_null(values: tuple[str, ...] | None) -> list[str] | None:
    return None if values is None else list(values)


def key_usage(view: KeyView, meter: UsageMeter | None) -> KeyUsage:
    """One key's counters for ``usage-stats``: budget spend and rate-limit usage."""
    tokens = requests = token_start = request_start = token_max = request_max = None
    if view.rate_limit is not None:
        tokens, requests, token_start, request_start = rate_usage(view.rate_limit, meter)
        token_max = view.rate_limit.token_max_limit
        request_max = view.rate_limit.request_max_limit
    spent = max_limit = window_start = None
    if view.budget is not None:
        spent, window_start = budget_usage(view.budget, meter)
        max_limit = view.budget.max_limit
    return KeyUsage(
        virtual_key_id=view.key.id,
        name=view.key.name,
        tokens_current_usage=tokens,
        requests_current_usage=requests,
        tokens_last_reset=token_start,
        requests_last_reset=request_start,
        token_max_limit=token_max,
        request_max_limit=request_max,
        budget_current_usage=spent,
        budget_max_limit=max_limit,
        budget_last_reset=window_start,
    )
