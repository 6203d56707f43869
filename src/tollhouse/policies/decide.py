"""The choke point: one decision per action, whichever route, format or stream mode
asked for it (docs/policies.md, *How a decision is made*).

For an action and a principal, the policies that **apply** are the enabled ones of that
action (or ``*``) attached to the principal: globally, to its customer, team or key, or
to one of its tags. They are worked out once per principal and snapshot. Then:

1. **Deny wins.** The deny policies are evaluated first, higher priority first; the first
   that matches denies, naming itself.
2. Then the allow policies, in the same order; the first that matches allows.
3. **Default deny.** When policies apply and no allow matched, the request is denied.
   When none applies, it is allowed without evaluating anything.

An *undefined* answer (a Rego rule with no value, an OPA answer without ``result``)
denies, naming the policy, whatever its effect. An engine error obeys the policy's
``fail_mode``: ``closed`` — a deny policy denies, an allow policy does not allow;
``open`` — a deny policy does not deny, an allow policy allows. Errors are counted and
logged, and a decision they touched is written to the decision log.

The document is built only when some policy applies, and each engine prepares it once
per decision (``engines.py``); synchronous engines are called inline, so a request
governed by CEL or Rego policies awaits nothing here.
"""

from __future__ import annotations

import itertools
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any

from tollhouse.policies.document import Doc, document, principal
from tollhouse.policies.engines import Condition, EvaluationFailed, PolicyEngine

log = logging.getLogger("tollhouse.policies")

APPLIED_HEADER = "x-tollhouse-applied-policies"
DECISION_HEADER = "x-tollhouse-policy-decision"


@dataclass(frozen=True, slots=True)
class Who:
    """A principal as attachments see it (from a key's scope chain; anonymous: empty)."""

    key_id: str
    team_id: str
    customer_id: str
    tags: frozenset[str]
    doc: Doc = field(compare=False)  # the document's ``principal`` (not in the hash)

    @classmethod
    def of(cls, chain: tuple[Any, ...]) -> Who:
        doc = principal(chain)
        return cls(
            doc["key"]["id"],
            doc["team"]["id"],
            doc["customer"]["id"],
            frozenset(doc["tags"]),
            doc,
        )


ANONYMOUS = Who.of(())


@dataclass(frozen=True, slots=True)
class Compiled:
    """A stored policy, ready: its condition compiled (``None``: always matches), or the
    reason it could not be (``broken``: an error at every evaluation, ``fail_mode``
    deciding — a policy accepted on write that a server cannot load)."""

    id: str
    name: str
    action: str
    effect: str
    engine: str
    condition: Condition | None
    priority: int
    fail_mode: str
    everyone: bool
    customers: frozenset[str] = frozenset()
    teams: frozenset[str] = frozenset()
    keys: frozenset[str] = frozenset()
    tags: frozenset[str] = frozenset()
    broken: str | None = None

    def attached(self, who: Who) -> bool:
        return (
            self.everyone
            or who.key_id in self.keys
            or who.team_id in self.teams
            or who.customer_id in self.customers
            or not self.tags.isdisjoint(who.tags)
        )


def compile_row(row: Any, engines: Mapping[str, PolicyEngine]) -> Compiled:
    """A stored policy compiled; never raises (a failure makes it ``broken``)."""
    by: dict[str, set[str]] = {"customer": set(), "team": set(), "key": set(), "tag": set()}
    everyone = False
    for attachment in row.attachments:
        if attachment["type"] == "global":
            everyone = True
        else:
            by[attachment["type"]].add(attachment.get("id") or attachment.get("tag") or "")
    condition: Condition | None = None
    broken = None
    if row.condition is not None:
        engine = engines.get(row.engine)
        try:
            if engine is None:
                raise EvaluationFailed(f"the {row.engine} engine is not configured")
            condition = engine.compile(row.condition, row.rule, row.action)
        except Exception as exc:  # PolicyInvalid, or anything an engine raises
            broken = f"not loaded: {getattr(exc, 'message', None) or exc}"
            log.error("policy not loaded", extra={"policy": row.name, "error": broken})
    return Compiled(
        id=row.id,
        name=row.name,
        action=row.action,
        effect=row.effect,
        engine=row.engine,
        condition=condition,
        priority=row.priority,
        fail_mode=row.fail_mode,
        everyone=everyone,
        customers=frozenset(by["customer"]),
        teams=frozenset(by["team"]),
        keys=frozenset(by["key"]),
        tags=frozenset(by["tag"]),
        broken=broken,
    )


@dataclass(frozen=True, slots=True)
class Failure:
    """A condition that could not be evaluated in a decision."""

    policy: str
    error: str
    fail_mode: str
    engine: str


@dataclass(slots=True)
class Decision:
    id: str
    action: str
    allowed: bool
    reason: str
    policy: Compiled | None = None  # the one that decided; None: no policy, or the default
    applied: tuple[str, ...] = ()
    errors: list[Failure] = field(default_factory=list)
    duration_us: int = 0
    engines: str = "none"  # the engines that evaluated conditions, "+"-joined

    @property
    def headers(self) -> dict[str, str]:
        return {APPLIED_HEADER: ", ".join(self.applied), DECISION_HEADER: self.id}


@dataclass(frozen=True, slots=True)
class _Applicable:
    names: tuple[str, ...]
    denies: tuple[Compiled, ...]
    allows: tuple[Compiled, ...]
    batch: Any = None  # the engine's batch of its conditions here (CEL: one program)
    batched: tuple[str, ...] = ()  # the ids of the policies in it, in its order


_NONE = _Applicable((), (), ())
Batcher = Callable[[list[Compiled]], tuple[Any, tuple[str, ...]]]


class PolicySet:
    """Every enabled policy of one snapshot, by action, highest priority first."""

    def __init__(self, compiled: Iterable[Compiled] = (), batcher: Batcher | None = None) -> None:
        ordered = sorted(compiled, key=lambda p: (-p.priority, p.name))
        self.policies = tuple(ordered)
        self._batcher = batcher
        self._cache: dict[tuple[str, Who], _Applicable] = {}

    def applicable(self, action: str, who: Who) -> _Applicable:
        found = self._cache.get((action, who))
        if found is None:
            mine = [p for p in self.policies if p.action in (action, "*") and p.attached(who)]
            denies = tuple(p for p in mine if p.effect == "deny")
            allows = tuple(p for p in mine if p.effect == "allow")
            batch, batched = (
                self._batcher([*denies, *allows]) if self._batcher and mine else (None, ())
            )
            found = (
                _Applicable(tuple(p.name for p in mine), denies, allows, batch, batched)
                if mine
                else _NONE
            )
            if len(self._cache) > 100_000:  # principals come and go: bound the memory
                self._cache.clear()
            self._cache[(action, who)] = found
        return found


class Decider:
    """Makes decisions against the current ``PolicySet``; ``on_decided`` is told of each
    (the decision log and metrics)."""

    def __init__(
        self,
        engines: Mapping[str, PolicyEngine],
        on_decided: Callable[[Decision, Doc | None, float], None] | None = None,
        *,
        zone: tzinfo = UTC,
    ) -> None:
        self.engines = engines
        self.zone = zone
        self.policies = PolicySet()
        self._on_decided = on_decided

    def load(self, rows: Iterable[Any]) -> None:
        enabled = [compile_row(row, self.engines) for row in rows if row.enabled]
        self.policies = PolicySet(enabled, self._batch)

    def _batch(self, policies: list[Compiled]) -> tuple[Any, tuple[str, ...]]:
        """The CEL conditions among ``policies``, run together (``cel.CelBatch``)."""
        engine = self.engines.get("cel")
        batch = getattr(engine, "batch", None)
        cel = [p for p in policies if p.engine == "cel" and p.condition is not None]
        if batch is None or not cel:
            return None, ()
        return batch([p.condition for p in cel]), tuple(p.id for p in cel)

    async def decide(
        self,
        action: str,
        who: Who,
        request: Doc,
        resource: Doc,
        now: datetime | None = None,
    ) -> Decision:
        started = time.perf_counter()
        found = self.policies.applicable(action, who)
        if found is _NONE:
            decision = Decision(new_decision_id(), action, True, "no policy applies")
            if self._on_decided is not None:
                self._on_decided(decision, None, started)
            return decision
        doc = document(action, who.doc, request, resource, now, self.zone)
        static = (action, who, tuple(resource.values()))  # what a CEL context keeps converted
        decision = await self._evaluate(action, found, doc, static)
        decision.duration_us = int((time.perf_counter() - started) * 1_000_000)
        if self._on_decided is not None:
            self._on_decided(decision, doc, started)
        return decision

    async def _evaluate(self, action: str, found: _Applicable, doc: Doc, static: Any) -> Decision:
        prepared: dict[str, Any] = {}
        errors: list[Failure] = []
        answers: dict[str, Any] = {}
        if found.batch is not None:
            # Before any await: the batch's context is shared by the caller's decisions.
            prepared["cel"] = found.batch
            answers = dict(zip(found.batched, found.batch.evaluate(doc, static), strict=True))

        def decided(allowed: bool, reason: str, policy: Compiled | None) -> Decision:
            engines = "+".join(sorted(prepared)) or "none"
            return Decision(
                new_decision_id(), action, allowed, reason, policy, found.names, errors, 0, engines
            )

        for policy in found.denies:
            answer = self._answer(policy, doc, prepared, errors, answers)
            if answer is _AWAIT:
                answer = await self._answer_async(policy, doc, prepared, errors)
            if answer is True:
                return decided(False, f"denied by policy {policy.name}", policy)
            if answer is None:
                return decided(False, f"policy {policy.name} answered undefined", policy)
            if answer == "error" and policy.fail_mode == "closed":
                reason = f"policy {policy.name} failed closed: {errors[-1].error}"
                return decided(False, reason, policy)
        for policy in found.allows:
            answer = self._answer(policy, doc, prepared, errors, answers)
            if answer is _AWAIT:
                answer = await self._answer_async(policy, doc, prepared, errors)
            if answer is True:
                return decided(True, f"allowed by policy {policy.name}", policy)
            if answer is None:
                return decided(False, f"policy {policy.name} answered undefined", policy)
            if answer == "error" and policy.fail_mode == "open":
                reason = f"policy {policy.name} failed open: {errors[-1].error}"
                return decided(True, reason, policy)
        if found.allows:
            reason = "no allow policy matched (" + ", ".join(p.name for p in found.allows) + ")"
        else:
            reason = f"no allow policy applies to {action}: policies apply, so the default is deny"
        if errors:
            reason += "; errors: " + "; ".join(f"{e.policy}: {e.error}" for e in errors)
        return decided(False, reason, None)

    def _answer(
        self,
        policy: Compiled,
        doc: Doc,
        prepared: dict[str, Any],
        errors: list[Failure],
        answers: dict[str, Any],
    ) -> bool | None | str:
        """The policy's answer, ``"error"`` (recorded in ``errors``), or ``_AWAIT`` for
        an external engine's (``_answer_async``): a synchronous call for embedded ones."""
        answer = answers.get(policy.id, _NOT_RUN)
        if answer is not _NOT_RUN:
            if not isinstance(answer, EvaluationFailed):
                return answer  # type: ignore[no-any-return]
            errors.append(Failure(policy.name, str(answer), policy.fail_mode, policy.engine))
            return "error"
        condition = policy.condition
        if condition is None:
            if policy.broken is None:
                return True  # no condition: always matches
            errors.append(Failure(policy.name, policy.broken, policy.fail_mode, policy.engine))
            return "error"
        if condition.is_async:
            return _AWAIT
        try:
            return condition.evaluate(self._prepared(policy.engine, doc, prepared))
        except Exception as exc:  # EvaluationFailed, or an engine's own failure: never a 500
            return self._failed(policy, exc, errors)

    async def _answer_async(
        self, policy: Compiled, doc: Doc, prepared: dict[str, Any], errors: list[Failure]
    ) -> bool | None | str:
        assert policy.condition is not None
        try:
            ready = self._prepared(policy.engine, doc, prepared)
            return await policy.condition.evaluate_async(ready)
        except Exception as exc:
            return self._failed(policy, exc, errors)

    def _prepared(self, engine: str, doc: Doc, prepared: dict[str, Any]) -> Any:
        ready = prepared.get(engine)
        if ready is None:
            ready = prepared[engine] = self.engines[engine].prepare(doc)
        return ready

    @staticmethod
    def _failed(policy: Compiled, exc: Exception, errors: list[Failure]) -> str:
        error = str(exc) if isinstance(exc, EvaluationFailed) else f"{type(exc).__name__}: {exc}"
        errors.append(Failure(policy.name, error, policy.fail_mode, policy.engine))
        return "error"


_AWAIT = "await"
_NOT_RUN = object()


_PREFIX = ""
_SEQUENCE = itertools.count()


def _reseed() -> None:
    global _PREFIX, _SEQUENCE
    _PREFIX = "pdec_" + os.urandom(8).hex()
    _SEQUENCE = itertools.count()


_reseed()
os.register_at_fork(after_in_child=_reseed)


def new_decision_id() -> str:
    """Unique across processes and replicas (a random prefix per process, a counter)."""
    return f"{_PREFIX}{next(_SEQUENCE):012x}"
