"""Plans: what the requests of one virtual key claim, worked out once per key and snapshot.

A plan names the counters a key's requests reserve, in the order admission checks them
(request rates, token rates, requests in flight, budgets, from the key up to its
customer, then the prepaid account that pays: the nearest of the key's, its team's and
its customer's — one account pays for a request, never two), picks each counter's
amount out of a request's amounts by kind with one C-level ``itemgetter``, and lists
the rate counters the ``x-ratelimit-*`` headers read.

``follow`` applies a new snapshot to the counters already kept: a counter whose limit
or window changed is rebuilt on next use, the others take the new scope.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tollhouse.admission.meter import Counter, CounterId, Kind
from tollhouse.admission.snapshot import KeyInfo, Scope, Snapshot, WindowSpec

# A request's amounts by kind, in this order: (requests, tokens, parallel, cost); a
# budget and a prepaid account both reserve the cost bound.
KIND_INDEX: dict[Kind, int] = {
    "requests": 0,
    "tokens": 1,
    "parallel": 2,
    "budget": 3,
    "credits": 3,
}
Amounts = tuple[int, int, int, int]


@dataclass(frozen=True, slots=True)
class Plan:
    """What every request of one key claims, worked out once per key and snapshot."""

    counters: tuple[CounterId, ...]  # in the order admission checks them
    counter_set: frozenset[CounterId]
    pick: Callable[[Amounts], tuple[int, ...]]  # amounts by kind → per counter
    rates: tuple[tuple[str, tuple[CounterId, ...]], ...]  # rate counters, for the headers
    team_id: str | None
    customer_id: str | None
    credit_account_id: str | None  # the prepaid account that pays, if any
    fail_open: bool  # when the shared meter is unreachable (``on_meter_failure``)


def new_counter(chain: tuple[Scope, ...], counter_id: CounterId, key: KeyInfo | None) -> Counter:
    kind, ident = counter_id
    if kind == "parallel":
        if key is None:
            raise KeyError(counter_id)
        return Counter("parallel", key.max_parallel or 0, None, key.scope)
    for scope in chain:
        credit = scope.credit
        if kind == "credits" and credit is not None and credit.account_id == ident:
            return Counter("credits", credit.limit_nanos, None, scope)
        if kind == "budget" and scope.budget is not None and scope.budget.id == ident:
            return Counter("budget", scope.budget.limit_nanos, scope.budget.window, scope)
        rate = scope.rate
        if rate is not None and rate.id == ident:
            if kind == "tokens" and rate.token_limit is not None:
                return Counter("tokens", rate.token_limit, rate.token_window, scope)
            if kind == "requests" and rate.request_limit is not None:
                return Counter("requests", rate.request_limit, rate.request_window, scope)
    raise KeyError(counter_id)


def scope_counters(scope: Scope) -> list[CounterId]:
    ids: list[CounterId] = []
    if scope.budget is not None:
        ids.append(("budget", scope.budget.id))
    if scope.rate is not None:
        if scope.rate.request_limit is not None:
            ids.append(("requests", scope.rate.id))
        if scope.rate.token_limit is not None:
            ids.append(("tokens", scope.rate.id))
    if scope.credit is not None:
        ids.append(("credits", scope.credit.account_id))
    return ids


def plan_for(key: KeyInfo, default_failure: str) -> Plan:
    """The counters a key's requests claim, in check order: rates, parallel, budgets."""
    requests: list[CounterId] = []
    tokens: list[CounterId] = []
    money: list[CounterId] = []
    for scope in key.chain:
        rate = scope.rate
        if rate is not None and rate.request_limit is not None:
            requests.append(("requests", rate.id))
        if rate is not None and rate.token_limit is not None:
            tokens.append(("tokens", rate.id))
        if scope.budget is not None:
            money.append(("budget", scope.budget.id))
    parallel: list[CounterId] = [("parallel", key.scope.id)] if key.max_parallel else []
    account = next((s.credit.account_id for s in key.chain if s.credit is not None), None)
    if account is not None:
        money.append(("credits", account))
    ids = (*requests, *tokens, *parallel, *money)
    rates = tuple((kind, tuple(ks)) for kind, ks in (("requests", requests), ("tokens", tokens)))
    owners = {scope.kind: scope.id for scope in key.chain[1:]}
    return Plan(
        counters=ids,
        counter_set=frozenset(ids),
        pick=_picker(tuple(KIND_INDEX[k[0]] for k in ids)),
        rates=tuple((kind, ks) for kind, ks in rates if ks),
        team_id=owners.get("team"),
        customer_id=owners.get("customer"),
        credit_account_id=account,
        fail_open=(key.on_meter_failure or default_failure) == "open",
    )


def _picker(indexes: tuple[int, ...]) -> Callable[[Amounts], tuple[int, ...]]:
    """A function from amounts by kind to amounts per claimed counter."""
    if len(indexes) >= 2:
        return operator.itemgetter(*indexes)
    if indexes:
        (only,) = indexes
        return lambda amounts: (amounts[only],)
    return lambda amounts: ()


def _collect_specs(scope: Scope, specs: dict[CounterId, Any]) -> None:
    if scope.budget is not None:
        specs[("budget", scope.budget.id)] = (scope.budget.limit_nanos, scope.budget.window)
    if scope.credit is not None:
        specs[("credits", scope.credit.account_id)] = (scope.credit.limit_nanos, None)
    rate = scope.rate
    if rate is not None:
        if rate.token_limit is not None:
            specs[("tokens", rate.id)] = (rate.token_limit, rate.token_window)
        if rate.request_limit is not None:
            specs[("requests", rate.id)] = (rate.request_limit, rate.request_window)


def window_spec(snapshot: Snapshot, counter_id: CounterId) -> WindowSpec | None:
    """The window the snapshot gives ``counter_id`` (after a reset, its new anchor)."""
    kind, ident = counter_id
    for scope in snapshot.scopes.values():
        if kind == "budget" and scope.budget is not None and scope.budget.id == ident:
            return scope.budget.window
        if scope.rate is not None and scope.rate.id == ident:
            return scope.rate.token_window if kind == "tokens" else scope.rate.request_window
    return None


def follow(counters: dict[CounterId, Counter], new: Snapshot) -> None:
    """Counters whose limit or window changed are dropped, to be rebuilt on next use (or
    changed in place while reservations still hold them); the others take the new
    snapshot's scope (names, alert thresholds and channels)."""
    specs: dict[CounterId, Any] = {}
    owners: dict[CounterId, Scope] = {}
    for scope in new.scopes.values():
        _collect_specs(scope, specs)
        for counter_id in scope_counters(scope):
            owners[counter_id] = scope
    for key_id, info in new.keys_by_id.items():
        specs[("parallel", key_id)] = info.max_parallel
        owners[("parallel", key_id)] = info.scope
    for counter_id, counter in list(counters.items()):
        if counter.payer is not None:
            continue  # an agent budget: its limit is a setting, not the snapshot's
        owner = owners.get(counter_id)
        if owner is not None:
            counter.scope = owner
        spec = specs.get(counter_id)
        if spec is None or spec != (counter.limit, counter.window):
            if counter.kind == "parallel" and spec is not None:
                counter.limit = int(spec)
                continue
            if counter.kind == "credits" and spec is not None:
                # Funding moved: usage (committed) is unchanged, only what it may reach.
                counter.limit = spec[0]
                continue
            if counter.reserved == 0:
                del counters[counter_id]
            elif spec is not None:
                counter.limit, counter.window = spec
                counter.start = counter.end = None
                counter.start_us = counter.end_us = 0
