"""``Admission``: identify the key, check it, reserve the worst case, settle.

The engine the gateway calls around every inference request (docs/governance.md):

1. ``authenticate(headers)`` — key known → active and not expired (401/403);
2. ``allowed_targets`` — model and provider allowed (403);
3. ``admit(ctx, key, body, targets)`` — request rate → token rate → requests in
   flight (429) → budgets (402), key then team then customer, reserved all at once or
   not at all on the ``Meter``;
4. ``settle(ctx, record)`` when the usage record is written, or ``release(ctx)`` when
   the request consumed nothing.

Counters a request needs are created, and their committed values rebuilt from the
ledger, before the check (``Meter.track``); after that the hot path never touches the
database. The meter (memory or Redis) is chosen once, in ``app.py``; nothing here
depends on which. Threshold alerts leave through the ``AlertSink`` given at
construction.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from functools import partial
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tollhouse.admission import access, refusals, views
from tollhouse.admission.agents import AgentBudgets
from tollhouse.admission.headers import rate_headers
from tollhouse.admission.meter import (
    Counter,
    CounterId,
    Kind,
    Meter,
    MeterUnreachable,
    Refusal,
    Spent,
    from_micros,
)
from tollhouse.admission.plans import Plan, follow, new_counter, plan_for, scope_counters
from tollhouse.admission.plans import window_spec as spec_of
from tollhouse.admission.snapshot import KeyInfo, Snapshot, load_snapshot
from tollhouse.config import Settings
from tollhouse.gateway.context import RequestContext
from tollhouse.gateway.estimate import worst_case
from tollhouse.gateway.routing import Target
from tollhouse.governance.keys import hash_key
from tollhouse.governance.service import current_version, restart_windows
from tollhouse.ledger.schemas import UsageRecord
from tollhouse.money import from_nanos, to_nanos

log = logging.getLogger("tollhouse.admission")

# A request's key, team and customer ids, as its usage record carries them.
Owners = tuple[str | None, str | None, str | None]


class AlertSink(Protocol):
    """Where budget threshold crossings go (``tollhouse.alerts.AlertService``)."""

    def budget_reached(
        self, ids: Owners, counter: Counter, before: int, after: int, refused: bool = False
    ) -> None:
        """A settle by the request of ``ids`` took ``counter`` from ``before`` to
        ``after`` nano-dollars, or a refusal found it full (``refused``). Called on the
        request path: never blocks."""
        ...


# Something loaded with the governance snapshot (``also_load``).
Loader = Callable[[AsyncConnection], Awaitable[None]]


class Admission:
    def __init__(
        self,
        settings: Settings,
        engine: AsyncEngine,
        meter: Meter[Any],
        *,
        alerts: AlertSink | None = None,
        also_load: Sequence[Loader] = (),
    ) -> None:
        self._settings = settings
        self._engine = engine
        self.meter = meter
        self._alerts = alerts
        # Read with the snapshot, on its connection (the policies): one version for all.
        self._also_load = tuple(also_load)
        self.snapshot = Snapshot.empty()
        self._tasks: list[asyncio.Task[None]] = []
        self._reload_lock = asyncio.Lock()
        self._plans: dict[str, Plan] = {}
        self._agents = AgentBudgets(settings)
        # Presented key → its entry, for keys seen since the last reload: spares a hash.
        self._by_value: dict[str, KeyInfo] = {}

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        try:
            await self.meter.start()
        except Exception as exc:
            log.error("meter not ready", extra={"error": repr(exc)})
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
        await self.meter.stop(timeout_s=self._settings.shutdown_timeout_s)

    async def reload(self) -> None:
        """Read the whole snapshot again (after an admin write, or a version change)."""
        async with self._reload_lock:
            async with self._engine.connect() as conn:
                # A write between the two reads bumps the version: the next poll reloads.
                snapshot = await load_snapshot(conn)
                for load in self._also_load:
                    await load(conn)
            self.snapshot = snapshot
            self._plans = {}
            self._by_value = {}
            follow(self.meter.counters, snapshot)
        # A refund or an expiry lowers what an account may spend: tell every replica now,
        # not at its next poll (docs/credits.md, *Admission*).
        credits = [i for i in self.meter.counters if i[0] == "credits"]
        if credits:
            try:
                await self.meter.publish_limits(credits)
            except MeterUnreachable as exc:  # the next request carries the limit along
                log.warning("credit limits not published", extra={"error": repr(exc)})
        await self.prime()

    async def prime(self) -> None:
        """Load every budget and rate-limit counter from the ledger, so that the admin
        API shows spend after a restart before the scope's next request."""
        counters = self.meter.counters
        for scope in list(self.snapshot.scopes.values()):
            wanted = [i for i in scope_counters(scope) if i not in counters]
            if wanted:
                new = {i: new_counter((scope,), i, None) for i in wanted}
                await self.meter.track(new, datetime.now(UTC))
        await self.refresh()

    async def refresh(self) -> None:
        """Bring every counter up to date with the meter's store, so that admin views
        show what every replica spent (nothing to do in memory)."""
        for scope in list(self.snapshot.scopes.values()):
            await self.meter.refresh(scope_counters(scope), datetime.now(UTC))

    # -- the request path -----------------------------------------------------------

    def authenticate(self, headers: Mapping[str, str]) -> KeyInfo | None:
        """The caller's key, or ``None`` for anonymous access when the operator allows it."""
        value = access.key_from_headers(headers)
        if value is None:
            if self._settings.allow_anonymous:
                return None
            raise refusals.missing_key()
        key = self._by_value.get(value)
        if key is None:
            if self.snapshot.version < 0:
                raise refusals.not_loaded()
            key = self.snapshot.keys_by_hash.get(hash_key(value)) if value else None
            if key is None:
                raise refusals.unknown_key()
            self._by_value[value] = key
        if not key.is_active:
            raise refusals.inactive(key)
        if key.expires_at is not None and key.expires_at <= datetime.now(UTC):
            raise refusals.expired(key, key.expires_at)
        return key

    # The targets a key may use; raises ``ModelNotAllowed`` when none. The function
    # itself, not a method calling it: one call less on every request.
    allowed_targets = staticmethod(access.allowed_targets)

    async def admit(
        self,
        ctx: RequestContext,
        key: KeyInfo,
        body: dict[str, Any],
        targets: tuple[Target, ...],
    ) -> dict[str, str]:
        """Reserve the worst case of ``body`` on every scope of ``key``; returns the
        ``x-ratelimit-*`` headers. Raises 429/402 (503 if the meter is unreachable and
        the key fails closed) without reserving anything."""
        estimate = worst_case(body, targets, self._settings.default_max_output_tokens)
        plan = self._plan_of(key)
        meter = self.meter
        counters = meter.counters
        if not plan.counter_set <= counters.keys():
            new = {i: new_counter(key.chain, i, key) for i in plan.counters if i not in counters}
            await meter.track(new, datetime.now(UTC))
        now_us = time.time_ns() // 1000
        ids, amounts = plan.counters, plan.pick((1, estimate.tokens, 1, estimate.cost_nanos))
        if ctx.agent is not None and self._agents.any:
            ids, amounts = await self._with_agent(ctx, key, ids, amounts, estimate.tokens)
        try:
            outcome = await meter.reserve(ctx.request_id, ids, amounts, now_us, plan.fail_open)
        except MeterUnreachable as exc:
            raise refusals.meter_unreachable(key, exc) from None
        if isinstance(outcome, Refusal):
            counter = outcome.counter
            if counter.kind == "budget" and self._alerts is not None:
                # A budget that refuses a request has reached 100 %, whatever it settled.
                owners = (key.scope.id, plan.team_id, plan.customer_id)
                spent = counter.committed
                self._alerts.budget_reached(owners, counter, spent, spent, refused=True)
            error = refusals.over_limit(outcome, estimate.cost_nanos, from_micros(now_us))
            error.headers.update(rate_headers(plan, counters, now_us))
            raise error
        ctx.reservation = outcome
        ctx.key_id = key.scope.id
        ctx.team_id = plan.team_id
        ctx.customer_id = plan.customer_id
        ctx.credit_account_id = plan.credit_account_id
        return rate_headers(plan, counters, now_us)

    async def _with_agent(
        self,
        ctx: RequestContext,
        key: KeyInfo,
        ids: tuple[CounterId, ...],
        amounts: tuple[int, ...],
        tokens: int,
    ) -> tuple[tuple[CounterId, ...], tuple[int, ...]]:
        """The key's counters, then the agent budgets of its session's call."""
        assert ctx.agent is not None
        wanted = self._agents.counters(key, ctx.agent)
        counters = self.meter.counters
        new = {i: c for i, c in wanted.items() if i not in counters}
        if new:
            await self.meter.track(new, datetime.now(UTC))
        return ids + tuple(wanted), amounts + (tokens,) * len(wanted)

    def settle(self, ctx: RequestContext, record: UsageRecord) -> None:
        """Replace the request's reservation by what its record says it consumed."""
        held = ctx.reservation
        if held is None:
            return
        ctx.reservation = None
        cost = to_nanos(record.cost)
        actual: dict[Kind, int] = {
            "budget": cost,
            "tokens": record.prompt_tokens + record.completion_tokens,
            "requests": 1,
            "credits": cost,
        }
        on_spent: Spent | None = None
        alerts = self._alerts
        if alerts is not None and actual["budget"]:
            ids = (ctx.key_id, ctx.team_id, ctx.customer_id)
            on_spent = partial(alerts.budget_reached, ids)  # positional: a fast C call
        key_id = ctx.key_id or ""
        plan = self._plans.get(key_id)
        if plan is not None and len(held.ids) >= len(plan.counters):
            uncovered: tuple[CounterId, ...] = ()  # the usual case, decided without a call
        else:
            uncovered = self._uncovered(key_id, held.ids)
        self.meter.settle(held, actual, record.created_at, on_spent, uncovered)

    def release(self, ctx: RequestContext) -> None:
        """Give the request's reservation back: it consumed nothing."""
        held = ctx.reservation
        if held is not None:
            ctx.reservation = None
            self.meter.release(held)

    def _uncovered(self, key_id: str, held: tuple[CounterId, ...]) -> tuple[CounterId, ...]:
        """Counters of the key's scopes the reservation did not claim: created after it
        (a budget added mid-flight), from a ledger without this request's record."""
        plan = self._plans.get(key_id)
        if plan is None:
            key = self.snapshot.keys_by_id.get(key_id)
            if key is None:
                return ()
            plan = self._plan_of(key)
        if len(held) >= len(plan.counters):
            return ()
        claimed = set(held)
        key = self.snapshot.keys_by_id[key_id]
        return tuple(i for scope in key.chain for i in scope_counters(scope) if i not in claimed)

    def _plan_of(self, key: KeyInfo) -> Plan:
        plan = self._plans.get(key.scope.id)
        if plan is None:
            plan = plan_for(key, self._settings.on_meter_failure)
            self._plans[key.scope.id] = plan
        return plan

    # -- admin views ----------------------------------------------------------------

    def budget_usage(self, budget_id: str) -> tuple[Decimal, datetime | None]:
        return views.budget_usage(self.meter.counters, budget_id, datetime.now(UTC))

    def rate_usage(self, rate_limit_id: str) -> tuple[int, int, datetime | None, datetime | None]:
        return views.rate_usage(self.meter.counters, rate_limit_id, datetime.now(UTC))

    def counters(self) -> list[dict[str, Any]]:
        return views.counter_rows(self.meter.counters, datetime.now(UTC))

    async def credit_usage(self, account_id: str) -> tuple[Decimal, Decimal] | None:
        """A prepaid account's usage as admission counts it — settled (including what
        the ledger has not written yet) and held by requests in flight, every replica's
        on Redis — or ``None`` when no request of this process has used it."""
        counter_id: CounterId = ("credits", account_id)
        if counter_id not in self.meter.counters:
            return None
        await self.meter.refresh([counter_id], datetime.now(UTC))
        counter = self.meter.counters.get(counter_id)
        if counter is None:
            return None
        return from_nanos(counter.committed), from_nanos(counter.reserved)

    async def reset_usage(self, budget_ids: list[str], rate_limit_ids: list[str]) -> None:
        """Start the current windows afresh: the next request passes (``usage-reset``)."""
        async with self._engine.begin() as conn:
            await restart_windows(conn, budget_ids, rate_limit_ids)
        await self.reload()
        ids: list[CounterId] = [("budget", i) for i in budget_ids]
        ids += [(kind, i) for i in rate_limit_ids for kind in ("tokens", "requests")]
        for counter_id in ids:
            counter = self.meter.counters.get(counter_id)
            # The reloaded snapshot carries the new anchor; windows are rebuilt from it.
            fresh = spec_of(self.snapshot, counter_id)
            if counter is not None and fresh is not None:
                counter.window = fresh
        await self.meter.reset(ids, datetime.now(UTC))

    # -- background -------------------------------------------------------------------

    async def catch_up(self) -> None:
        """Reload the snapshot if the store's version moved (a key another replica just
        made is found without waiting for the next poll)."""
        await self._poll()

    async def _poll(self) -> None:
        if self.snapshot.version < 0:
            await self.reload()
            return
        async with self._engine.connect() as conn:
            version = await current_version(conn)
        if version != self.snapshot.version:
            await self.reload()

    async def _sweep(self) -> None:
        expired = await self.meter.sweep(datetime.now(UTC))
        if expired:
            log.warning("reservations expired without settling", extra={"count": expired})

    async def _every(self, seconds: float, job: Callable[[], Awaitable[None]]) -> None:
        while True:
            await asyncio.sleep(seconds)
            try:
                await job()
            except Exception:  # a failed poll or sweep must not end the loop
                log.exception("admission background job failed")
