"""The broker the app holds for tracks (``/v1/allocate``): who is asking (a broker
token), how often (a per-track limit), whether the policies allow it, then a lease from
the pool (``pool.allocate``).

``allocate`` is the ``sandbox.allocate`` choke point: the token, the track's rate limit
and the policies are checked before the pool is touched. The time an allocation took is
a metric, by outcome (a new lease, the track's own), as are refusals for an empty pool.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tollhouse.config import Settings
from tollhouse.errors import PolicyDenied, PoolExhausted
from tollhouse.ops.metrics import Metrics
from tollhouse.policies.decide import Who
from tollhouse.policies.document import Scope, sandbox_request, sandbox_resource
from tollhouse.policies.gate import PolicyGate
from tollhouse.sandboxes import pool
from tollhouse.sandboxes.limits import TrackLimiter
from tollhouse.sandboxes.service import Pool
from tollhouse.sandboxes.tokens import Token, TokenSet


class Broker:
    def __init__(
        self,
        engine: AsyncEngine,
        settings: Settings,
        metrics: Metrics,
        policies: PolicyGate,
        limiter: TrackLimiter,
        sandboxes: Pool,
    ) -> None:
        self._engine = engine
        self._settings = settings
        self._metrics = metrics
        self._policies = policies
        self._limiter = limiter
        self.pool = sandboxes
        self.tokens = TokenSet()
        self._who: dict[str, Who] = {}

    async def reload(self, conn: AsyncConnection) -> None:
        """The broker tokens (with the governance snapshot, at the same version)."""
        await self.tokens.reload(conn)
        self._who = {}

    def authenticate(self, authorization: str | None) -> Token:
        return self.tokens.check(authorization)

    async def limit(self, track_id: str) -> None:
        await self._limiter.hit(track_id)

    async def allocate(
        self,
        token: Token,
        track_id: str,
        hours: float | None,
        idempotency_key: str | None,
        purpose: str = "lab",
    ) -> pool.Leased:
        """A track's lease, asked with a broker token."""
        return await self.lease(
            self._principal(token),
            track_id,
            hours,
            purpose,
            token_id=token.id,
            idempotency_key=idempotency_key,
        )

    async def lease(
        self,
        who: Who,
        track_id: str,
        hours: float | None,
        purpose: str,
        *,
        token_id: str | None = None,
        idempotency_key: str | None = None,
        backend: str | None = None,
    ) -> pool.Leased:
        """The choke point of every lease: the ``sandbox.allocate`` decision for ``who``
        (a track's token, or the key of an agent session whose tool needs a sandbox),
        then the pool's one-statement lease."""
        started = time.perf_counter()
        settings = self._settings
        hours = settings.sandbox_lab_hours if hours is None else hours
        request = sandbox_request(track=track_id, purpose=purpose, lab_minutes=round(hours * 60))
        decision = await self._policies.decide(
            "sandbox.allocate", who, request, sandbox_resource(backend=backend or "")
        )
        if not decision.allowed:
            raise PolicyDenied(
                f"Allocation denied by policy: {decision.reason} (decision {decision.id})",
                headers=decision.headers,
            )
        ask = pool.Ask(
            track_id=track_id,
            duration=timedelta(hours=hours),
            purpose=purpose,
            token_id=token_id,
            idempotency_key=idempotency_key,
            backend=backend,
        )
        grace = timedelta(minutes=settings.sandbox_grace_minutes)
        try:
            leased = await pool.allocate(
                self._engine, ask, grace, datetime.now(UTC), settings.sandbox_retry_after_s
            )
        except PoolExhausted:
            self._metrics.sandbox_exhausted.inc()
            self.pool.exhausted += 1
            self.pool.wake.set()  # a pool with a target refills now, not at the next pass
            raise
        outcome = "new" if leased.created else "held"
        self._metrics.sandbox_allocations.labels(outcome).observe(time.perf_counter() - started)
        if leased.created and settings.sandbox_pool_target:
            self.pool.wake.set()
        return leased

    def _principal(self, token: Token) -> Who:
        """The token as ``principal.key`` of the policy document (its tags matched)."""
        found = self._who.get(token.id)
        if found is None:
            chain = (Scope("key", token.id, token.name, token.tags),)
            found = self._who[token.id] = Who.of(chain)
        return found
