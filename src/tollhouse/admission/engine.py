"""Admission (docs/governance.md): identify the key, check it, reserve the worst case, settle.

``Governance`` is the service the gateway calls around every inference request:

1. ``authenticate(headers)`` — key known → active and not expired (401/403);
2. ``admit(ctx, key, body, targets)`` — model and provider allowed (403) → request
   rate → token rate → requests in flight (429) → budgets (402), key then team then
   customer, reserved all at once or not at all;
3. ``settle(ctx, record)`` when the usage record is written, or ``release(ctx)`` when
   the request consumed nothing.

Nothing here awaits between a check and its reservation (see ``meter.py``). Counters a
request needs are created, and their committed values rebuilt from the ledger, before
the check (``_ensure``); after that the hot path never touches the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from tollhouse.config import Settings
from tollhouse.errors import (
    AuthenticationFailed,
    BudgetExceeded,
    KeyInactive,
    ModelNotAllowed,
    ParallelLimited,
    RateLimited,
    StoreUnavailable,
    TollhouseError,
)
from tollhouse.gateway.context import RequestContext
from tollhouse.gateway.estimate import MAX_ESTIMATE, choices, output_token_bound, prompt_token_bound
from tollhouse.gateway.routing import Target
from tollhouse.governance.keys import hash_key, key_from_headers
from tollhouse.governance.meter import (
    Counter,
    CounterKey,
    Kind,
    MemoryMeter,
    MeterUnreachable,
    Missing,
    Refusal,
    SharedReservation,
    from_micros,
    micros,
)
from tollhouse.governance.plans import (
    RATE_HEADERS,
    Plan,
    collect_specs,
    new_counter,
    plan_for,
    scope_counters,
)
from tollhouse.governance.service import restart_windows
from tollhouse.governance.store import KeyInfo, Scope, Snapshot, current_version, load_snapshot
from tollhouse.ledger.models import usage_records
from tollhouse.ledger.schemas import UsageRecord
from tollhouse.money import format_usd, from_nanos, to_nanos

if TYPE_CHECKING:
    from tollhouse.alerts.service import AlertService
    from tollhouse.governance.shared import RedisMeter

log = logging.getLogger("tollhouse.governance")

# Records this recent may still be on their way to the ledger when a counter is built.
REBUILD_MARGIN_US = 5_000_000

_OWNER_COLUMN = {
    "key": usage_records.c.key_id,
    "team": usage_records.c.team_id,
    "customer": usage_records.c.customer_id,
}


@dataclass(frozen=True, slots=True)
class Estimate:
    """The worst case one request may consume."""

    cost_nanos: int
    tokens: int


@dataclass(slots=True)
class Fallback:
    """A request admitted on this replica's local meter while Redis was unreachable: its
    local reservation, and the settle that merges its usage into Redis once it is back."""

    local: Any  # meter.Reservation
    shared: SharedReservation


class Governance:
    def __init__(
        self,
        settings: Settings,
        engine: AsyncEngine,
        recorder: Any,
        redis: Any = None,
        metrics: Any = None,
    ) -> None:
        self._settings = settings
        self._engine = engine
        self._recorder = recorder
        self._metrics = metrics
        ttl_s = settings.request_timeout_s + 60
        # Embedded: the meter. Scaled out: the mirror of what Redis last reported.
        self.meter = MemoryMeter(ttl_s=ttl_s)
        self.alerts: AlertService | None = None  # set by the app: threshold events
        self.shared: RedisMeter | None = None
        if redis is not None:
            from tollhouse.governance.shared import RedisMeter  # the optional redis extra

            self.shared = RedisMeter(redis, ttl_s=ttl_s)
        self.snapshot = Snapshot.empty()
        self._tasks: list[asyncio.Task[None]] = []
        self._reload_lock = asyncio.Lock()
        self._plans: dict[str, Plan] = {}
        # Presented key → its entry, for keys seen since the last reload: spares a hash.
        self._by_value: dict[str, KeyInfo] = {}

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        if self.shared is not None:
            try:
                await self.shared.start()
            except Exception as exc:
                log.error("Redis meter not ready", extra={"error": repr(exc)})
        try:
            await self.reload()
        except Exception as exc:
            # Keep serving probes; keyed requests get 503 until the poll loop loads it.
            log.error("governance snapshot not loaded; retrying", extra={"error": repr(exc)})
        self._tasks = [
            asyncio.create_task(
                self._every(self._settings.governance_poll_interval_s, self._poll),
                name="tollhouse-governance-poll",
            ),
            asyncio.create_task(self._every(1.0, self._sweep), name="tollhouse-sweeper"),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self.shared is not None:
            await self.shared.stop(timeout_s=self._settings.shutdown_timeout_s)

    async def reload(self) -> None:
        """Read the whole snapshot again (after an admin write, or a version change)."""
        async with self._reload_lock:
            async with self._engine.connect() as conn:
                snapshot = await load_snapshot(conn)
            old, self.snapshot = self.snapshot, snapshot
            self._plans = {}
            self._by_value = {}
            self._drop_changed_counters(old, snapshot)
        await self.prime()

    async def prime(self) -> None:
        """Load every budget and rate-limit counter from the ledger, so that the admin
        API shows spend after a restart before the scope's next request."""
        for scope in list(self.snapshot.scopes.values()):
            wanted = [k for k in scope_counters(scope) if not self.meter.has(k)]
            if wanted:
                await self._ensure((scope,), wanted)
        if self.shared is not None:
            await self.refresh()

    async def refresh(self) -> None:
        """Scaled out: read every counter from Redis (rebuilding those it lacks), so that
        admin views show what all replicas spent."""
        if self.shared is None:
            return
        for scope in list(self.snapshot.scopes.values()):
            pairs = [(k, self.meter.counters[k]) for k in scope_counters(scope)]
            missing = await self.shared.read([p for p in pairs if p[0] in self.meter.counters])
            if missing:
                await self._rebuild(missing)
                await self.shared.read(pairs)

    # -- the request path -----------------------------------------------------------

    def authenticate(self, headers: Mapping[str, str]) -> KeyInfo | None:
        """The caller's key, or ``None`` for anonymous access when the operator allows it."""
        value = key_from_headers(headers)
        if value is None:
            if self._settings.allow_anonymous:
                return None
            raise AuthenticationFailed(
                "Missing virtual key: send a Tollhouse key (th-…) as `Authorization: Bearer`, "
                "`x-api-key` or `x-bf-vk`.",
            )
        key = self._by_value.get(value)
        if key is None:
            if self.snapshot.version < 0:
                raise StoreUnavailable(
                    "Governance data is not loaded yet (database unreachable); retry shortly."
                )
            key = self.snapshot.keys_by_hash.get(hash_key(value)) if value else None
            if key is None:
                raise AuthenticationFailed("Invalid virtual key: no key matches the one sent.")
            self._by_value[value] = key
        if not key.is_active:
            raise KeyInactive(f"Virtual {key.scope.label} is inactive.")
        if key.expires_at is not None and key.expires_at <= datetime.now(UTC):
            raise KeyInactive(f"Virtual {key.scope.label} expired at {key.expires_at.isoformat()}.")
        return key

    def allowed_targets(
        self, key: KeyInfo, requested: str, targets: tuple[Target, ...]
    ) -> tuple[Target, ...]:
        """The targets this key may use; raises ``ModelNotAllowed`` when none."""
        models = key.allowed_models
        if models is not None and requested not in models:
            targets = tuple(t for t in targets if t.model in models or t.label in models)
            if not targets:
                raise ModelNotAllowed(
                    f"Model '{requested}' is not allowed for virtual key {key.scope.label}; "
                    f"allowed: {', '.join(sorted(models)) or 'none'}.",
                    param="model",
                )
        providers = key.allowed_providers
        if providers is not None:
            targets = tuple(t for t in targets if t.provider in providers)
            if not targets:
                raise ModelNotAllowed(
                    f"No provider allowed for virtual key {key.scope.label} serves "
                    f"'{requested}'; allowed providers: {', '.join(sorted(providers)) or 'none'}.",
                    param="model",
                )
        return targets

    async def admit(
        self,
        ctx: RequestContext,
        key: KeyInfo,
        body: dict[str, Any],
        targets: tuple[Target, ...],
    ) -> dict[str, str]:
        """Reserve the worst case of ``body`` on every scope of ``key``; returns the
        ``x-ratelimit-*`` headers. Raises 429/402 without reserving anything."""
        estimate = self.estimate(body, targets)
        plan = self._plan_of(key)
        if self.shared is not None:
            return await self._admit_shared(ctx, key, plan, estimate)
        meter = self.meter
        if not plan.key_set <= meter.counters.keys():
            missing = [k for k in plan.keys if not meter.has(k)]
            await self._ensure(key.chain, missing, key)
        now_us = time.time_ns() // 1000
        amounts = plan.pick((1, estimate.tokens, 1, estimate.cost_nanos))
        outcome = meter.reserve_all(plan.keys, amounts, now_us)
        if isinstance(outcome, Refusal):
            if outcome.counter.kind == "budget":
                self._refused_alert(outcome.counter, key, plan)
            error = self._refusal(outcome, estimate, from_micros(now_us))
            error.headers.update(self._headers_for(plan, now_us))
            raise error
        ctx.reservation = outcome
        ctx.key_id = key.scope.id
        ctx.team_id = plan.team_id
        ctx.customer_id = plan.customer_id
        return self._headers_for(plan, now_us)

    async def _admit_shared(
        self, ctx: RequestContext, key: KeyInfo, plan: Plan, estimate: Estimate
    ) -> dict[str, str]:
        """``admit`` on the shared meter: one Redis call checks and reserves everything."""
        shared, counters = self.shared, self.meter.counters
        assert shared is not None
        if not plan.keys:
            # A key without any limit: nothing to reserve, so no Redis round trip.
            ctx.key_id = key.scope.id
            ctx.team_id = plan.team_id
            ctx.customer_id = plan.customer_id
            return {}
        if not plan.key_set <= counters.keys():
            # Mirror counters: the limit and the window; values come from Redis.
            for counter_key in plan.keys:
                if counter_key not in counters:
                    counter = new_counter(key.chain, counter_key, key)
                    self.meter.load(counter_key, counter, None)
        now_us = time.time_ns() // 1000
        pairs = []
        for counter_key in plan.keys:
            counter = counters[counter_key]
            if not counter.start_us <= now_us < counter.end_us:
                counter.roll(from_micros(now_us))
            pairs.append((counter_key, counter))
        amounts = plan.pick((1, estimate.tokens, 1, estimate.cost_nanos))
        for _ in range(3):
            try:
                outcome = await shared.reserve(ctx.request_id, pairs, amounts, now_us)
            except MeterUnreachable as exc:
                if (key.on_meter_failure or self._settings.on_meter_failure) == "open":
                    return self._admit_fallback(ctx, key, plan, estimate, amounts, now_us, exc)
                raise StoreUnavailable(
                    f"Budgets and limits cannot be checked: Redis is unreachable ({exc}); "
                    f"virtual {key.scope.label} fails closed (on_meter_failure)."
                ) from None
            if not isinstance(outcome, Missing):
                break
            await self._rebuild(list(outcome.keys))
        else:
            raise StoreUnavailable("Counters could not be rebuilt in Redis; retry shortly.")
        if isinstance(outcome, tuple):
            _, counter, amount = outcome
            if counter.kind == "budget":
                self._refused_alert(counter, key, plan)
            error = self._refusal(Refusal(counter, amount), estimate, from_micros(now_us))
            error.headers.update(self._headers_for(plan, now_us))
            raise error
        ctx.reservation = outcome
        ctx.key_id = key.scope.id
        ctx.team_id = plan.team_id
        ctx.customer_id = plan.customer_id
        return self._headers_for(plan, now_us)

    def _admit_fallback(
        self,
        ctx: RequestContext,
        key: KeyInfo,
        plan: Plan,
        estimate: Estimate,
        amounts: tuple[int, ...],
        now_us: int,
        error: Exception,
    ) -> dict[str, str]:
        """Redis is away and the key fails open: admit against this replica's local meter
        (the last values Redis reported plus what this replica admitted since). Its usage
        is merged into Redis, exactly once, when Redis answers again."""
        outcome = self.meter.reserve_all(plan.keys, amounts, now_us)
        if isinstance(outcome, Refusal):
            refusal = self._refusal(outcome, estimate, from_micros(now_us))
            refusal.headers.update(self._headers_for(plan, now_us))
            raise refusal
        if self._metrics is not None:
            self._metrics.meter_fallback_admissions.inc()
        log.warning(
            "admitted on the local meter: Redis unreachable",
            extra={"request_id": ctx.request_id, "key_id": key.scope.id, "error": str(error)},
        )
        unknown = ("",) * len(plan.keys)
        shared = SharedReservation(ctx.request_id, plan.keys, amounts, unknown, reserved=False)
        ctx.reservation = Fallback(outcome, shared)
        ctx.key_id = key.scope.id
        ctx.team_id = plan.team_id
        ctx.customer_id = plan.customer_id
        return self._headers_for(plan, now_us)

    async def _rebuild(self, keys: list[CounterKey]) -> None:
        """Build counters Redis lacks from the ledger (first use, or Redis lost its data).

        The sum covers every record of the window in the ledger; records created in the
        last ``REBUILD_MARGIN_US`` are named, so that their settles, which may still be on
        their way, are not counted twice. Older records are all in the ledger by then
        (they are written within one flush interval) and their settles are ignored.
        """
        shared = self.shared
        assert shared is not None
        await self._recorder.flush()
        now = datetime.now(UTC)
        cut_us = micros(now) - REBUILD_MARGIN_US
        async with self._engine.connect() as conn:
            for counter_key in keys:
                counter = self.meter.counters.get(counter_key)
                if counter is None:
                    continue
                if counter.window is None:
                    await shared.load(counter_key, 0, cut_us, (0, 0), [])
                    continue
                window = counter.window.at(now)
                start_us = micros(window.start)
                committed, counted = await self._ledger_since(conn, counter, window.start, cut_us)
                span = (start_us, micros(window.end))
                await shared.load(counter_key, committed, cut_us, span, counted)

    async def _ledger_since(
        self, conn: Any, counter: Counter, start: datetime, cut_us: int
    ) -> tuple[int, list[str]]:
        """What the ledger holds for ``counter`` since ``start``, and the ids of records
        created at or after ``cut_us``."""
        t = usage_records.c
        owner = _OWNER_COLUMN[counter.scope.kind]
        cut = max(from_micros(cut_us), start)
        before = await self._committed(conn, counter, start, until=cut)
        rows = await conn.execute(
            select(t.id, t.cost, t.prompt_tokens, t.completion_tokens).where(
                owner == counter.scope.id, t.created_at >= cut
            )
        )
        total, ids = before, []
        for row in rows:
            ids.append(row.id)
            if counter.kind == "budget":
                total += to_nanos(row.cost)
            elif counter.kind == "tokens":
                total += row.prompt_tokens + row.completion_tokens
            else:
                total += 1
        return total, ids

    def settle(self, ctx: RequestContext, record: UsageRecord) -> None:
        reservation = ctx.reservation
        if reservation is None:
            return
        ctx.reservation = None
        actual: dict[Kind, int] = {
            "budget": to_nanos(record.cost),
            "tokens": record.prompt_tokens + record.completion_tokens,
            "requests": 1,
        }
        if isinstance(reservation, SharedReservation):
            self._settle_shared(reservation, actual, micros(record.created_at), ctx)
            return
        if isinstance(reservation, Fallback):
            self.meter.settle(reservation.local, actual, record.created_at)
            self._settle_shared(reservation.shared, actual, micros(record.created_at), ctx)
            return
        alerts = self.alerts
        if alerts is not None and actual["budget"]:
            before = [
                (counter, counter.committed, counter.start_us)
                for counter_key in reservation.keys
                if counter_key[0] == "budget" and (counter := self.meter.counters.get(counter_key))
            ]
        self.meter.settle(reservation, actual, record.created_at)
        if alerts is not None and actual["budget"]:
            ids = (ctx.key_id, ctx.team_id, ctx.customer_id)
            for counter, committed, start_us in before:
                spent_before = committed if counter.start_us == start_us else 0
                alerts.budget_reached(counter, spent_before, counter.committed, ids, refused=False)
        # A counter created after this request reserved (a budget added mid-flight) was
        # built from a ledger without this record: it must count the record too.
        key_id = ctx.key_id or ""
        plan = self._plans.get(key_id)
        key = self.snapshot.keys_by_id.get(key_id) if plan is None else None
        if plan is None and key is not None:
            plan = self._plan_of(key)
        if plan is not None and len(reservation.keys) < len(plan.keys):
            key = self.snapshot.keys_by_id[key_id]
            claimed = set(reservation.keys)
            for scope in key.chain:
                for counter_key in scope_counters(scope):
                    if counter_key not in claimed:
                        amount = actual.get(counter_key[0], 0)
                        self.meter.commit(counter_key, amount, record.created_at)

    def release(self, ctx: RequestContext) -> None:
        reservation = ctx.reservation
        if reservation is None:
            return
        ctx.reservation = None
        if isinstance(reservation, SharedReservation):
            self._settle_shared(reservation, {}, time.time_ns() // 1000)
        elif isinstance(reservation, Fallback):
            self.meter.release(reservation.local)  # nothing consumed: nothing to merge
        else:
            self.meter.release(reservation)

    def _settle_shared(
        self,
        reservation: SharedReservation,
        actual: dict[Kind, int],
        created_us: int,
        ctx: RequestContext | None = None,
    ) -> None:
        assert self.shared is not None
        windows = []
        for counter_key in reservation.keys:
            counter = self.meter.counters.get(counter_key)
            if counter is None or counter.window is None:
                windows.append((0, 0))
            elif counter.start_us <= created_us < counter.end_us:
                windows.append((counter.start_us, counter.end_us))
            else:
                window = counter.window.at(from_micros(created_us))
                windows.append((micros(window.start), micros(window.end)))
        on_committed = None
        spent, alerts = actual.get("budget", 0), self.alerts
        if alerts is not None and ctx is not None and spent:
            ids = (ctx.key_id, ctx.team_id, ctx.customer_id)

            def on_committed(after: list[int | None]) -> None:
                for counter_key, value in zip(reservation.keys, after, strict=True):
                    counter = self.meter.counters.get(counter_key)
                    if counter_key[0] == "budget" and value is not None and counter is not None:
                        alerts.budget_reached(counter, value - spent, value, ids, refused=False)

        self.shared.settle(reservation, actual, tuple(windows), created_us, on_committed)

    def estimate(self, body: dict[str, Any], targets: tuple[Target, ...]) -> Estimate:
        """Worst-case cost and tokens over every target the request may reach."""
        prompt = prompt_token_bound(body)
        n = choices(body)
        cost = 0
        tokens = 0
        for target in targets:
            price = target.price
            cap = price.max_output_tokens if price else None
            output = output_token_bound(body, cap, self._settings.default_max_output_tokens) * n
            tokens = max(tokens, prompt + output)
            if price is not None:
                input_rate, output_rate = price.worst_pico_rates
                # pico-dollars → nano-dollars, rounded up: -(-x // n) is ceil(x / n).
                cost = max(cost, -(-(prompt * input_rate + output * output_rate) // 1000))
        return Estimate(min(cost, MAX_ESTIMATE), min(tokens, MAX_ESTIMATE))

    def _headers_for(self, plan: Plan, now_us: int) -> dict[str, str]:
        """OpenAI's ``x-ratelimit-*`` headers from the tightest scope with each limit."""
        headers: dict[str, str] = {}
        if not plan.rates:
            return headers
        counters = self.meter.counters
        for kind, keys in plan.rates:
            tightest = counters[keys[0]]
            left = tightest.limit - tightest.committed - tightest.reserved
            for counter_key in keys[1:]:
                counter = counters[counter_key]
                remaining = counter.limit - counter.committed - counter.reserved
                if remaining < left:
                    tightest, left = counter, remaining
            limit_name, remaining_name, reset_name = RATE_HEADERS[kind]
            headers[limit_name] = str(tightest.limit)
            headers[remaining_name] = str(left if left > 0 else 0)
            if tightest.end is not None:
                headers[reset_name] = _reset_text(tightest.end_us - now_us)
        return headers

    # -- building claims --------------------------------------------------------------

    def _plan_of(self, key: KeyInfo) -> Plan:
        plan = self._plans.get(key.scope.id)
        if plan is None:
            plan = self._plans[key.scope.id] = plan_for(key)
        return plan

    async def _ensure(
        self, chain: tuple[Scope, ...], missing: list[CounterKey], key: KeyInfo | None = None
    ) -> None:
        """Create counters, rebuilding committed values from the ledger."""
        # Records still buffered must be in the ledger before it is summed.
        await self._recorder.flush()
        now = datetime.now(UTC)
        async with self._engine.connect() as conn:
            for counter_key in missing:
                if self.meter.has(counter_key):
                    continue
                counter = new_counter(chain, counter_key, key)
                window = counter.window.at(now) if counter.window is not None else None
                if window is not None and counter.kind != "parallel":
                    counter.committed = await self._committed(conn, counter, window.start)
                # Another request may have built this counter (and settled on it) while
                # the sum was awaited: that one is current, this one is stale.
                if not self.meter.has(counter_key):
                    self.meter.load(counter_key, counter, window)

    async def _committed(
        self, conn: Any, counter: Counter, since: datetime, until: datetime | None = None
    ) -> int:
        t = usage_records.c
        measure: Any = {
            "budget": func.coalesce(func.sum(t.cost), 0),
            "tokens": func.coalesce(func.sum(t.prompt_tokens + t.completion_tokens), 0),
            "requests": func.count(),
        }[counter.kind]
        owner = _OWNER_COLUMN[counter.scope.kind]
        query = select(measure).where(owner == counter.scope.id, t.created_at >= since)
        if until is not None:
            query = query.where(t.created_at < until)
        value = (await conn.execute(query)).scalar_one()
        if counter.kind == "budget":
            return to_nanos(Decimal(value))
        return int(value)

    # -- alerts -------------------------------------------------------------------------

    def _refused_alert(self, counter: Counter, key: KeyInfo, plan: Plan) -> None:
        """A budget that refuses a request has reached 100 %, whatever it settled."""
        if self.alerts is not None:
            spent = counter.committed
            ids = (key.scope.id, plan.team_id, plan.customer_id)
            self.alerts.budget_reached(counter, spent, spent, ids, refused=True)

    # -- refusals -----------------------------------------------------------------------

    def _refusal(self, refusal: Refusal, estimate: Estimate, now: datetime) -> TollhouseError:
        counter = refusal.counter
        label = counter.scope.label
        retry = _retry_after(counter, now)
        until = f" until {counter.end.isoformat()}" if counter.end else ""
        if counter.kind == "budget":
            left = from_nanos(counter.remaining)
            limit = from_nanos(counter.limit)
            return BudgetExceeded(
                f"Budget exceeded for {label}: {_usd(left)} USD left of {_usd(limit)} USD"
                f"{until}; this request may cost up to {_usd(from_nanos(estimate.cost_nanos))} "
                "USD.",
            )
        headers = {"retry-after": str(retry)}
        if counter.kind == "parallel":
            return ParallelLimited(
                f"Too many requests in flight for {label}: {counter.reserved} of "
                f"{counter.limit} allowed at once.",
                headers=headers,
            )
        used = counter.committed + counter.reserved
        what = "Request" if counter.kind == "requests" else "Token"
        return RateLimited(
            f"{what} rate limit reached for {label}: {used} of {counter.limit} "
            f"{counter.kind} used{until}; this request needs {refusal.amount}. "
            f"Retry in {retry}s.",
            headers=headers,
        )

    # -- admin views ----------------------------------------------------------------------

    def budget_usage(self, budget_id: str) -> tuple[Decimal, datetime | None]:
        counter = self.meter.counters.get(("budget", budget_id))
        if counter is None:
            return Decimal(0), None
        counter.roll(datetime.now(UTC))
        return from_nanos(counter.committed), counter.start

    def rate_usage(self, rate_limit_id: str) -> tuple[int, int, datetime | None, datetime | None]:
        now = datetime.now(UTC)
        tokens = self.meter.counters.get(("tokens", rate_limit_id))
        requests = self.meter.counters.get(("requests", rate_limit_id))
        for counter in (tokens, requests):
            if counter is not None:
                counter.roll(now)
        return (
            tokens.committed if tokens else 0,
            requests.committed if requests else 0,
            tokens.start if tokens else None,
            requests.start if requests else None,
        )

    async def reset_usage(self, budget_ids: list[str], rate_limit_ids: list[str]) -> None:
        """Start the current windows afresh: the next request passes (``usage-reset``)."""
        async with self._engine.begin() as conn:
            await restart_windows(conn, budget_ids, rate_limit_ids)
        await self.reload()
        now = datetime.now(UTC)
        for ident in budget_ids:
            self._reset(("budget", ident), now)
        for ident in rate_limit_ids:
            self._reset(("tokens", ident), now)
            self._reset(("requests", ident), now)
        if self.shared is not None:
            keys: list[CounterKey] = [("budget", i) for i in budget_ids]
            keys += [(kind, i) for i in rate_limit_ids for kind in ("tokens", "requests")]
            for counter_key in keys:
                counter = self.meter.counters.get(counter_key)
                if counter is not None and counter.window is not None:
                    await self.shared.reset([counter_key], (counter.start_us, counter.end_us))

    def counters(self) -> list[dict[str, Any]]:
        now = datetime.now(UTC)
        rows = []
        for (kind, ident), counter in sorted(self.meter.counters.items()):
            counter.roll(now)
            money = kind == "budget"
            rows.append(
                {
                    "kind": kind,
                    "id": ident,
                    "scope": counter.scope.kind,
                    "scope_id": counter.scope.id,
                    "limit": str(from_nanos(counter.limit)) if money else counter.limit,
                    "committed": str(from_nanos(counter.committed)) if money else counter.committed,
                    "reserved": str(from_nanos(counter.reserved)) if money else counter.reserved,
                    "window_start": counter.start.isoformat() if counter.start else None,
                    "window_end": counter.end.isoformat() if counter.end else None,
                }
            )
        return rows

    # -- internals ------------------------------------------------------------------------

    def _reset(self, counter_key: CounterKey, now: datetime) -> None:
        counter = self.meter.counters.get(counter_key)
        if counter is None:
            return
        # The reloaded snapshot carries the new anchor; rebuild the window from it.
        fresh = self._spec_window(counter_key)
        counter.window = fresh if fresh is not None else counter.window
        window = counter.window.at(now) if counter.window is not None else None
        self.meter.reset(counter_key, window)

    def _spec_window(self, counter_key: CounterKey) -> Any:
        kind, ident = counter_key
        for scope in self.snapshot.scopes.values():
            if kind == "budget" and scope.budget is not None and scope.budget.id == ident:
                return scope.budget.window
            if scope.rate is not None and scope.rate.id == ident:
                return scope.rate.token_window if kind == "tokens" else scope.rate.request_window
        return None

    def _drop_changed_counters(self, old: Snapshot, new: Snapshot) -> None:
        """Counters whose limit or window changed are rebuilt on next use; the others
        take the new snapshot's scope (names, alert thresholds and channels)."""
        specs: dict[CounterKey, Any] = {}
        owners: dict[CounterKey, Scope] = {}
        for scope in new.scopes.values():
            collect_specs(scope, specs)
            for counter_key in scope_counters(scope):
                owners[counter_key] = scope
        for key_id, info in new.keys_by_id.items():
            specs[("parallel", key_id)] = info.max_parallel
            owners[("parallel", key_id)] = info.scope
        for counter_key, counter in list(self.meter.counters.items()):
            owner = owners.get(counter_key)
            if owner is not None:
                counter.scope = owner
            spec = specs.get(counter_key)
            if spec is None or spec != (counter.limit, counter.window):
                if counter.kind == "parallel" and spec is not None:
                    counter.limit = int(spec)
                    continue
                if counter.reserved == 0:
                    del self.meter.counters[counter_key]
                elif spec is not None:
                    counter.limit, counter.window = spec
                    counter.start = counter.end = None
                    counter.start_us = counter.end_us = 0

    async def _poll(self) -> None:
        if self.snapshot.version < 0:
            await self.reload()
            return
        async with self._engine.connect() as conn:
            version = await current_version(conn)
        if version != self.snapshot.version:
            await self.reload()

    async def _sweep(self) -> None:
        if self.shared is not None:
            expired = await self.shared.sweep(time.time_ns() // 1_000_000)
            if expired:
                log.warning("reservations expired without settling", extra={"count": expired})
            return
        expired = self.meter.sweep(datetime.now(UTC))
        if expired:
            log.warning("reservations expired without settling", extra={"count": expired})

    async def _every(self, seconds: float, job: Any) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await job()
            except Exception:  # a failed poll or sweep must not end the loop
                log.exception("governance background job failed")


def _retry_after(counter: Counter, now: datetime) -> int:
    if counter.end is None:
        return 1
    return max(1, math.ceil((counter.end - now).total_seconds()))


def _reset_text(left_us: int) -> str:
    """OpenAI's reset form: ``1s``, ``6m0s``, ``1h2m3s``, ``20ms``."""
    if left_us < 1_000_000:
        return f"{-(-max(left_us, 0) // 1000)}ms"
    whole = -(-left_us // 1_000_000)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def _usd(amount: Decimal) -> str:
    return format_usd(amount)
