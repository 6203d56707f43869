"""The policy gate the app holds: the engines, the current policies, the decision log,
and one choke point per action.

``llm_request`` is the choke point every ``/v1`` inference route passes through (chat,
messages, embeddings; plain and streaming; OpenAI and Anthropic inbound): the gateway
calls it once it knows the candidate targets and before it reserves anything, calls a
provider or sends a byte. ``tool.execute`` and ``sandbox.allocate`` call ``decide`` with
their own request and resource documents.

Every decision is counted (``tollhouse_policy_decisions``) and timed per engine; denials
and decisions an engine error touched are logged and written to the decision log
(``policy_decisions``, batched off the request path), allows too with
``policy_log_allows``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, tzinfo
from typing import Any, cast

from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tollhouse.background import BatchQueue
from tollhouse.errors import PolicyDenied
from tollhouse.gateway.estimate import prompt_token_bound
from tollhouse.ops.metrics import Metrics
from tollhouse.policies import service
from tollhouse.policies.decide import ANONYMOUS, Decider, Decision, Who
from tollhouse.policies.document import Doc, llm_request, llm_resource
from tollhouse.policies.engines import PolicyEngine
from tollhouse.policies.models import policy_decisions

log = logging.getLogger("tollhouse.policies")

_NO_POLICY: dict[str, str] = {"x-tollhouse-applied-policies": ""}


@dataclass(frozen=True, slots=True)
class _Logged:
    decision: Decision
    at: datetime
    who: Who
    request_id: str | None
    resource: Doc


class PolicyGate:
    def __init__(
        self,
        engine: AsyncEngine,
        engines: Mapping[str, PolicyEngine],
        metrics: Metrics,
        regions: Mapping[str, str],
        *,
        log_allows: bool = False,
        zone: tzinfo = UTC,
    ) -> None:
        self._engine = engine
        self.engines = engines
        self.zone = zone  # of the document's ``time``
        self.decider = Decider(engines, zone=zone)
        self._metrics = metrics
        self._regions = regions  # provider → region, from the providers' settings
        self._log_allows = log_allows
        self._who: dict[str, Who] = {}
        self._children: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        self._log: BatchQueue[_Logged] = BatchQueue(
            self._write,
            name="tollhouse-policy-log",
            what="policy decisions",
            batch=500,
            retry=(Exception,),  # the database is away: keep them and retry
            max_delay_s=5.0,
        )

    async def start(self) -> None:
        await self._log.start()

    async def stop(self, timeout_s: float) -> None:
        await self._log.stop(timeout_s)

    async def flush(self) -> None:
        await self._log.flush()

    async def reload(self, conn: AsyncConnection) -> None:
        """Load the policies (with the governance snapshot, at the same version)."""
        self.decider.load(await service.list_policies(conn))
        self._who = {}

    # -- the choke points ------------------------------------------------------------------

    def who(self, key: Any) -> Who:
        """The principal of a key from admission's snapshot (``None``: anonymous)."""
        if key is None:
            return ANONYMOUS
        found = self._who.get(key.scope.id)
        if found is None or found.doc["key"]["name"] != key.scope.name:
            found = self._who[key.scope.id] = Who.of(key.chain)
        return found

    async def llm_request(
        self,
        key: Any,
        endpoint: str,
        body: Mapping[str, Any],
        model: str,
        targets: tuple[Any, ...],
        request_id: str,
    ) -> tuple[tuple[Any, ...], dict[str, str]]:
        """The targets the policies allow, in order, and the headers naming the decision;
        ``PolicyDenied`` when they allow none."""
        if not self.decider.policies.policies:
            return targets, _NO_POLICY  # read-only: the gateway copies it into its headers
        who = self.who(key)
        request = _llm_request(endpoint, body, model)
        allowed = []
        first: Decision | None = None
        chosen: Decision | None = None
        for target in targets:
            resource = llm_resource(
                target.model, target.provider, self._regions.get(target.provider, "")
            )
            decision = await self.decide("llm.request", who, request, resource, request_id)
            first = first or decision
            if decision.allowed:
                allowed.append(target)
                chosen = chosen or decision
        if chosen is None:
            assert first is not None
            raise PolicyDenied(
                f"Request denied by policy: {first.reason} (decision {first.id})",
                headers=first.headers,
            )
        return tuple(allowed), chosen.headers

    async def decide(
        self, action: str, who: Who, request: Doc, resource: Doc, request_id: str | None = None
    ) -> Decision:
        decision = await self.decider.decide(action, who, request, resource)
        self._observe(decision)
        if not decision.allowed or decision.errors or self._log_allows:
            self._log.put(_Logged(decision, datetime.now(UTC), who, request_id, resource))
            if not decision.allowed:
                log.info(
                    "policy denied",
                    extra={
                        "decision_id": decision.id,
                        "reason": decision.reason,
                        "request_id": request_id,
                    },
                )
        return decision

    def _observe(self, decision: Decision) -> None:
        outcome = "allow" if decision.allowed else "deny"
        labels = (decision.action, outcome, decision.engines)
        children = self._children.get(labels)
        if children is None:
            # ``labels()`` validates and hashes on every call: resolved once per label set.
            m = self._metrics
            children = self._children[labels] = (
                m.policy_decisions.labels(decision.action, outcome),
                m.policy_seconds.labels(decision.engines),
            )
        children[0].inc()
        children[1].observe(decision.duration_us / 1_000_000)
        for failure in decision.errors:
            self._metrics.policy_errors.labels(failure.engine, failure.fail_mode).inc()

    async def _write(self, batch: list[_Logged]) -> None:
        rows = [_row(item) for item in batch]
        async with self._engine.begin() as conn:
            await conn.execute(insert(policy_decisions), rows)


def _row(item: _Logged) -> dict[str, Any]:
    d = item.decision
    return {
        "id": d.id,
        "created_at": item.at,
        "action": d.action,
        "decision": "allow" if d.allowed else "deny",
        "policy_id": d.policy.id if d.policy else None,
        "policy_name": d.policy.name if d.policy else None,
        "reason": d.reason,
        "applied": list(d.applied),
        "errors": [
            {"policy": e.policy, "error": e.error, "fail_mode": e.fail_mode} for e in d.errors
        ],
        "request_id": item.request_id,
        "key_id": item.who.key_id or None,
        "team_id": item.who.team_id or None,
        "customer_id": item.who.customer_id or None,
        "resource": item.resource,
        "duration_us": d.duration_us,
    }


def _llm_request(endpoint: str, body: Mapping[str, Any], model: str) -> Doc:
    messages = body.get("messages") if endpoint != "embeddings" else body.get("input")
    count = len(messages) if isinstance(messages, list) else (1 if messages else 0)
    tools = body.get("tools")
    names = [_tool_name(t) for t in tools] if isinstance(tools, list) else []
    user = body.get("user")
    if not isinstance(user, str):
        metadata = body.get("metadata")
        user = metadata.get("user_id") if isinstance(metadata, dict) else None
    return llm_request(
        endpoint=endpoint,
        inbound="anthropic" if endpoint == "messages" else "openai",
        model=model,
        stream=body.get("stream") is True,
        max_output_tokens=_max_tokens(body),
        input_tokens=prompt_token_bound(cast(dict[str, Any], body)),  # read, not copied
        messages=count,
        tools=[n for n in names if n],
        user=user if isinstance(user, str) else "",
    )


def _tool_name(tool: Any) -> str:
    if not isinstance(tool, dict):
        return ""
    function = tool.get("function")
    name = function.get("name") if isinstance(function, dict) else tool.get("name")
    return name if isinstance(name, str) else ""


def _max_tokens(body: Mapping[str, Any]) -> int:
    for name in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return 0
