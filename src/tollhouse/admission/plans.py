"""Plans: what the requests of one key claim, worked out once per key and snapshot.

A plan names the counters a key's requests reserve, in the order admission checks them
(request rates, token rates, requests in flight, budgets, from the key up to its
customer), picks each counter's amount out of a request's amounts by kind with one
C-level ``itemgetter``, and lists the rate counters the ``x-ratelimit-*`` headers read.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tollhouse.governance.meter import Counter, CounterKey, Kind
from tollhouse.governance.store import KeyInfo, Scope

# A request's amounts by kind, in this order: (requests, tokens, parallel, budget).
KIND_INDEX: dict[Kind, int] = {"requests": 0, "tokens": 1, "parallel": 2, "budget": 3}
RATE_HEADERS = {
    kind: tuple(f"x-ratelimit-{what}-{kind}" for what in ("limit", "remaining", "reset"))
    for kind in ("requests", "tokens")
}


@dataclass(frozen=True, slots=True)
class Plan:
    """What every request of one key claims, worked out once per key and snapshot."""

    keys: tuple[CounterKey, ...]  # in the order admission checks them
    key_set: frozenset[CounterKey]
    pick: Callable[[tuple[int, int, int, int]], tuple[int, ...]]  # amounts by kind → per key
    rates: tuple[tuple[str, tuple[CounterKey, ...]], ...]  # rate counters, for the headers
    team_id: str | None
    customer_id: str | None


def new_counter(chain: tuple[Scope, ...], counter_key: CounterKey, key: KeyInfo | None) -> Counter:
    kind, ident = counter_key
    if kind == "parallel":
        if key is None:
            raise KeyError(counter_key)
        return Counter("parallel", key.max_parallel or 0, None, key.scope)
    for scope in chain:
        if kind == "budget" and scope.budget is not None and scope.budget.id == ident:
            return Counter("budget", scope.budget.limit_nanos, scope.budget.window, scope)
        rate = scope.rate
        if rate is not None and rate.id == ident:
            if kind == "tokens" and rate.token_limit is not None:
                return Counter("tokens", rate.token_limit, rate.token_window, scope)
            if kind == "requests" and rate.request_limit is not None:
                return Counter("requests", rate.request_limit, rate.request_window, scope)
    raise KeyError(counter_key)


def scope_counters(scope: Scope) -> list[CounterKey]:
    keys: list[CounterKey] = []
    if scope.budget is not None:
        keys.append(("budget", scope.budget.id))
    if scope.rate is not None:
        if scope.rate.request_limit is not None:
            keys.append(("requests", scope.rate.id))
        if scope.rate.token_limit is not None:
            keys.append(("tokens", scope.rate.id))
    return keys


def plan_for(key: KeyInfo) -> Plan:
    """The counters a key's requests claim, in check order: rates, parallel, budgets."""
    requests: list[CounterKey] = []
    tokens: list[CounterKey] = []
    money: list[CounterKey] = []
    for scope in key.chain:
        rate = scope.rate
        if rate is not None and rate.request_limit is not None:
            requests.append(("requests", rate.id))
        if rate is not None and rate.token_limit is not None:
            tokens.append(("tokens", rate.id))
        if scope.budget is not None:
            money.append(("budget", scope.budget.id))
    parallel: list[CounterKey] = [("parallel", key.scope.id)] if key.max_parallel else []
    keys = (*requests, *tokens, *parallel, *money)
    rates = tuple((kind, tuple(ks)) for kind, ks in (("requests", requests), ("tokens", tokens)))
    ids = {scope.kind: scope.id for scope in key.chain[1:]}
    return Plan(
        keys=keys,
        key_set=frozenset(keys),
        pick=_picker(tuple(KIND_INDEX[k[0]] for k in keys)),
        rates=tuple((kind, ks) for kind, ks in rates if ks),
        team_id=ids.get("team"),
        customer_id=ids.get("customer"),
    )


def _picker(indexes: tuple[int, ...]) -> Callable[[tuple[int, int, int, int]], tuple[int, ...]]:
    """A function from amounts by kind to amounts per claimed counter."""
    if len(indexes) >= 2:
        return operator.itemgetter(*indexes)
    if indexes:
        (only,) = indexes
        return lambda amounts: (amounts[only],)
    return lambda amounts: ()


def collect_specs(scope: Scope, specs: dict[CounterKey, Any]) -> None:
    if scope.budget is not None:
        specs[("budget", scope.budget.id)] = (scope.budget.limit_nanos, scope.budget.window)
    rate = scope.rate
    if rate is not None:
        if rate.token_limit is not None:
            specs[("tokens", rate.id)] = (rate.token_limit, rate.token_window)
        if rate.request_limit is not None:
            specs[("requests", rate.id)] = (rate.request_limit, rate.request_window)
