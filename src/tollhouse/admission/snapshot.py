"""The snapshot: every virtual key, team, customer, budget and rate limit, in memory.

Admission must not touch the database on the request path: it reads this snapshot,
loaded whole at start and again whenever ``governance_state.version`` moves (every
admin write bumps it in its own transaction, so other replicas and a CLI writing to the
same database are seen within one poll interval). The tables are governance's
(``tollhouse.governance.models``); this module reads them into frozen values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import ROUND_FLOOR, Decimal
from typing import Any, Literal
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from tollhouse.credits.models import credit_accounts
from tollhouse.governance.models import budgets, customers, rate_limits, teams, virtual_keys
from tollhouse.governance.service import current_version
from tollhouse.money import NANOS_PER_USD, to_nanos
from tollhouse.thresholds import Marks, marks
from tollhouse.windows import Duration, Window, parse_duration, window_at, zone

ScopeKind = Literal["key", "team", "customer"]


@dataclass(frozen=True, slots=True)
class WindowSpec:
    duration: Duration
    anchor: datetime
    calendar_aligned: bool = False
    tz: ZoneInfo | None = None

    def at(self, now: datetime) -> Window:
        return window_at(
            now, self.duration, self.anchor, calendar_aligned=self.calendar_aligned, tz=self.tz
        )


@dataclass(frozen=True, slots=True)
class BudgetSpec:
    id: str
    max_limit: Decimal
    hard_limit_ratio: Decimal
    window: WindowSpec
    alert_thresholds: tuple[Decimal, ...]
    alert_channels: tuple[str, ...] | None = None  # None: the default channels
    # Each threshold with the whole nano-dollars that reach it, worked out once here
    # because every settle of the budget compares against them.
    alert_marks: Marks = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "alert_marks", marks(self.alert_thresholds, self.max_limit))

    @property
    def limit_nanos(self) -> int:
        """What committed spend may reach: ``max_limit × hard_limit_ratio``, in nanos."""
        cap = self.max_limit * self.hard_limit_ratio * NANOS_PER_USD
        return int(cap.to_integral_value(rounding=ROUND_FLOOR))


@dataclass(frozen=True, slots=True)
class RateSpec:
    id: str
    token_limit: int | None
    token_window: WindowSpec | None
    request_limit: int | None
    request_window: WindowSpec | None


@dataclass(frozen=True, slots=True)
class CreditSpec:
    """A prepaid account: what its usage may reach (funding plus overdraft limit)."""

    account_id: str
    limit_nanos: int
    overdraft_nanos: int
    revision: int  # moves whenever the limit does (docs/credits.md, *Admission*)


@dataclass(frozen=True, slots=True)
class Scope:
    """A key, team or customer, with what it limits."""

    kind: ScopeKind
    id: str
    name: str
    budget: BudgetSpec | None
    rate: RateSpec | None
    credit: CreditSpec | None = None
    tags: tuple[str, ...] = ()  # a team's or a key's (policies match them)

    @property
    def label(self) -> str:
        return f"{self.kind} '{self.name}' ({self.id})"


@dataclass(frozen=True, slots=True)
class KeyInfo:
    scope: Scope
    is_active: bool
    expires_at: datetime | None
    allowed_models: frozenset[str] | None
    allowed_providers: frozenset[str] | None
    max_parallel: int | None
    chain: tuple[Scope, ...]  # the key, then its team, then the customer above them
    on_meter_failure: str | None = None  # the key's, else its team's; None: the default


@dataclass(frozen=True)
class Snapshot:
    version: int
    keys_by_hash: dict[str, KeyInfo]
    keys_by_id: dict[str, KeyInfo]
    scopes: dict[tuple[ScopeKind, str], Scope]

    @classmethod
    def empty(cls) -> Snapshot:
        return cls(-1, {}, {}, {})


async def load_snapshot(conn: AsyncConnection) -> Snapshot:
    """Read every governance entity at one version."""
    version = await current_version(conn)
    budget_specs = {row.id: _budget(row) for row in await conn.execute(select(budgets))}
    rate_specs = {row.id: _rate(row) for row in await conn.execute(select(rate_limits))}
    credit_specs = {
        (row.owner_type, row.owner_id): _credit(row)
        for row in await conn.execute(select(credit_accounts))
    }

    def scope(kind: ScopeKind, row: Any) -> Scope:
        return Scope(
            kind,
            row.id,
            row.name,
            budget_specs.get(row.budget_id) if row.budget_id else None,
            rate_specs.get(row.rate_limit_id) if row.rate_limit_id else None,
            credit_specs.get((kind, row.id)),
            tuple(getattr(row, "tags", None) or ()),  # customers have none
        )

    scopes: dict[tuple[ScopeKind, str], Scope] = {}
    customer_rows = {row.id: row for row in await conn.execute(select(customers))}
    for row in customer_rows.values():
        scopes[("customer", row.id)] = scope("customer", row)
    team_parent: dict[str, str | None] = {}
    team_failure: dict[str, str | None] = {}
    for row in await conn.execute(select(teams)):
        scopes[("team", row.id)] = scope("team", row)
        team_parent[row.id] = row.customer_id
        team_failure[row.id] = row.on_meter_failure
    by_hash: dict[str, KeyInfo] = {}
    by_id: dict[str, KeyInfo] = {}
    for row in await conn.execute(select(virtual_keys)):
        own = scope("key", row)
        scopes[("key", row.id)] = own
        chain = [own]
        customer_id = row.customer_id
        if row.team_id and ("team", row.team_id) in scopes:
            chain.append(scopes[("team", row.team_id)])
            customer_id = team_parent.get(row.team_id)
        if customer_id and ("customer", customer_id) in scopes:
            chain.append(scopes[("customer", customer_id)])
        info = KeyInfo(
            scope=own,
            is_active=bool(row.is_active),
            expires_at=row.expires_at,
            allowed_models=None if row.allowed_models is None else frozenset(row.allowed_models),
            allowed_providers=(
                None if row.allowed_providers is None else frozenset(row.allowed_providers)
            ),
            max_parallel=row.max_parallel_requests,
            chain=tuple(chain),
            on_meter_failure=row.on_meter_failure or team_failure.get(row.team_id or ""),
        )
        by_hash[row.key_hash] = info
        by_id[row.id] = info
    return Snapshot(version, by_hash, by_id, scopes)


def _budget(row: Any) -> BudgetSpec:
    return BudgetSpec(
        id=row.id,
        max_limit=row.max_limit,
        hard_limit_ratio=row.hard_limit_ratio,
        window=WindowSpec(
            parse_duration(row.reset_duration),
            row.last_reset,
            bool(row.calendar_aligned),
            zone(row.timezone or "UTC"),
        ),
        alert_thresholds=tuple(Decimal(str(t)) for t in row.alert_thresholds or ()),
        alert_channels=None if row.alert_channels is None else tuple(row.alert_channels),
    )


def _credit(row: Any) -> CreditSpec:
    # Usage (the counter's committed value) may reach funding plus the overdraft limit;
    # funding taken back below zero (a refund of spent credit) admits nothing.
    limit = max(to_nanos(row.funded + row.overdraft_limit), 0)
    return CreditSpec(row.id, limit, to_nanos(row.overdraft_limit), row.revision)


def _rate(row: Any) -> RateSpec:
    def spec(duration: str | None, anchor: datetime) -> WindowSpec | None:
        return WindowSpec(parse_duration(duration), anchor) if duration else None

    return RateSpec(
        id=row.id,
        token_limit=row.token_max_limit,
        token_window=spec(row.token_reset_duration, row.token_last_reset),
        request_limit=row.request_max_limit,
        request_window=spec(row.request_reset_duration, row.request_last_reset),
    )
