"""Every refusal admission answers, worded in one place (docs/governance.md, *How a
refusal reads*).

Each message names the scope (key, team or customer, with its name and id) and what
is left, so that the caller can act on it without asking the operator. The error
classes carry status and code (``tollhouse.errors``); this module only words them.
"""

from __future__ import annotations

import math
from datetime import datetime

from tollhouse.admission.meter import Counter, MeterUnreachable, Refusal
from tollhouse.admission.snapshot import KeyInfo
from tollhouse.errors import (
    AgentBudgetExceeded,
    AuthenticationFailed,
    BudgetExceeded,
    InsufficientCredits,
    KeyInactive,
    ModelNotAllowed,
    ParallelLimited,
    RateLimited,
    StoreUnavailable,
    TollhouseError,
)
from tollhouse.money import format_usd, from_nanos

NOT_LOADED = "Governance data is not loaded yet (database unreachable); retry shortly."
NOT_REBUILT = "Counters could not be rebuilt in Redis; retry shortly."


# -- who may call ---------------------------------------------------------------------


def missing_key() -> AuthenticationFailed:
    return AuthenticationFailed(
        "Missing virtual key: send a Tollhouse key (th-…) as `Authorization: Bearer`, "
        "`x-api-key` or `x-bf-vk`.",
    )


def unknown_key() -> AuthenticationFailed:
    return AuthenticationFailed("Invalid virtual key: no key matches the one sent.")


def not_loaded() -> StoreUnavailable:
    return StoreUnavailable(NOT_LOADED)


def inactive(key: KeyInfo) -> KeyInactive:
    return KeyInactive(f"Virtual {key.scope.label} is inactive.")


def expired(key: KeyInfo, at: datetime) -> KeyInactive:
    return KeyInactive(f"Virtual {key.scope.label} expired at {at.isoformat()}.")


# -- what they may call ---------------------------------------------------------------


def model_not_allowed(key: KeyInfo, requested: str, models: frozenset[str]) -> ModelNotAllowed:
    return ModelNotAllowed(
        f"Model '{requested}' is not allowed for virtual key {key.scope.label}; "
        f"allowed: {', '.join(sorted(models)) or 'none'}.",
        param="model",
    )


def provider_not_allowed(
    key: KeyInfo, requested: str, providers: frozenset[str]
) -> ModelNotAllowed:
    return ModelNotAllowed(
        f"No provider allowed for virtual key {key.scope.label} serves "
        f"'{requested}'; allowed providers: {', '.join(sorted(providers)) or 'none'}.",
        param="model",
    )


# -- how much they may use ------------------------------------------------------------


def meter_unreachable(key: KeyInfo, error: MeterUnreachable) -> StoreUnavailable:
    """The shared meter did not answer and the key fails closed (only Redis can be
    unreachable: the memory meter is this process)."""
    return StoreUnavailable(
        f"Budgets and limits cannot be checked: Redis is unreachable ({error}); "
        f"virtual {key.scope.label} fails closed (on_meter_failure)."
    )


def over_limit(refusal: Refusal, cost_nanos: int, now: datetime) -> TollhouseError:
    """402 for a budget, 429 for a rate or the parallel cap (with ``retry-after``);
    ``cost_nanos`` is the request's worst-case cost."""
    counter = refusal.counter
    label = counter.scope.label
    retry = _retry_after(counter, now)
    until = f" until {counter.end.isoformat()}" if counter.end else ""
    if counter.kind == "credits":
        return insufficient_credits(counter, cost_nanos)
    if counter.kind == "budget":
        left = format_usd(from_nanos(counter.remaining))
        limit = format_usd(from_nanos(counter.limit))
        cost = format_usd(from_nanos(cost_nanos))
        return BudgetExceeded(
            f"Budget exceeded for {label}: {left} USD left of {limit} USD"
            f"{until}; this request may cost up to {cost} USD.",
        )
    headers = {"retry-after": str(retry)}
    if counter.kind == "parallel":
        return ParallelLimited(
            f"Too many requests in flight for {label}: {counter.reserved} of "
            f"{counter.limit} allowed at once.",
            headers=headers,
        )
    used = counter.committed + counter.reserved
    if counter.payer is not None:
        tenant, _, persona = counter.payer[1].partition("/")
        whose = f"persona {persona!r} of {label}" if persona else label
        return AgentBudgetExceeded(
            f"Agent token budget reached for {whose}: {used} of {counter.limit} tokens used"
            f"{until}; this call needs up to {refusal.amount}. Retry in {retry}s.",
            headers=headers,
        )
    what = "Request" if counter.kind == "requests" else "Token"
    return RateLimited(
        f"{what} rate limit reached for {label}: {used} of {counter.limit} "
        f"{counter.kind} used{until}; this request needs {refusal.amount}. "
        f"Retry in {retry}s.",
        headers=headers,
    )


def _retry_after(counter: Counter, now: datetime) -> int:
    if counter.end is None:
        return 1
    return max(1, math.ceil((counter.end - now).total_seconds()))


def insufficient_credits(counter: Counter, cost_nanos: int) -> InsufficientCredits:
    """402: the prepaid account cannot cover the worst case (overdraft included)."""
    credit = counter.scope.credit
    overdraft = credit.overdraft_nanos if credit is not None else 0
    available = counter.limit - overdraft - counter.committed - counter.reserved
    account = credit.account_id if credit is not None else "?"
    also = f" (overdraft limit {format_usd(from_nanos(overdraft))} USD)" if overdraft else ""
    return InsufficientCredits(
        f"Insufficient credits on account {account} of {counter.scope.label}: "
        f"{format_usd(from_nanos(available))} USD available{also}; this request may cost "
        f"up to {format_usd(from_nanos(cost_nanos))} USD. Top up to continue."
    )
