"""Trying a policy without enforcing it: a dry run on one input, and an impact estimate
over the latest usage records (docs/policies.md, *Trying a policy*).

Both judge the policy **alone**: what it would do to the input if it were the only
policy that applied — its effect when it matches, a denial when it answers undefined,
its ``fail_mode`` on an error, and for an allow policy that does not match, the default
deny.

The impact estimate rebuilds each record's document from what the ledger kept: the
principal from the record's key, team and customer as they are now (names, tags), the
model and provider that served it (``request.model`` is that model too: the ledger keeps
the model served, not the name asked for), ``stream``, the prompt tokens the provider
counted as ``input_tokens``, the record's time. What the ledger does not keep — the
number of messages, tools, ``user``, the output cap — is empty or zero. Records of
principals the policy is not attached to are counted, never evaluated.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from datetime import UTC, tzinfo
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from tollhouse.errors import NotFound
from tollhouse.governance.models import customers, teams, virtual_keys
from tollhouse.ledger.models import usage_records
from tollhouse.policies.decide import Compiled, Who, compile_row
from tollhouse.policies.document import (
    ACTIONS,
    Doc,
    Scope,
    document,
    llm_request,
    llm_resource,
    samples,
)
from tollhouse.policies.engines import EvaluationFailed, PolicyEngine

Outcome = Literal["allow", "deny", "no match"]
EXAMPLES = 10


def outcome(policy: Compiled, answer: bool | None | str) -> Outcome:
    """What the policy alone does: ``answer`` is True, False, None or ``"error"``."""
    if answer is None:
        return "deny"
    if answer == "error":
        fails_to_effect = (policy.fail_mode == "closed") == (policy.effect == "deny")
        return policy.effect if fails_to_effect else "no match"  # type: ignore[return-value]
    if answer is True:
        return policy.effect  # type: ignore[return-value]
    return "no match"


def would_deny(policy: Compiled, answer: bool | None | str) -> bool:
    """Alone, it denies: its own deny, or (an allow policy) the default deny."""
    result = outcome(policy, answer)
    return result != "allow" if policy.effect == "allow" else result == "deny"


async def answer(
    policy: Compiled, doc: Doc, engines: Mapping[str, PolicyEngine]
) -> tuple[bool | None | str, str | None]:
    """The policy's answer for ``doc`` and the error, if any."""
    if policy.condition is None:
        return (True, None) if policy.broken is None else ("error", policy.broken)
    try:
        prepared = engines[policy.engine].prepare(doc)
        if policy.condition.is_async:
            return await policy.condition.evaluate_async(prepared), None
        return policy.condition.evaluate(prepared), None
    except EvaluationFailed as exc:
        return "error", str(exc)
    except Exception as exc:  # an engine's own failure: reported, never a 500
        return "error", f"{type(exc).__name__}: {exc}"


async def dry_run(
    conn: AsyncConnection,
    row: Any,
    given: dict[str, Any],
    key_id: str | None,
    engines: Mapping[str, PolicyEngine],
) -> dict[str, Any]:
    """The policy on ``given`` laid over the empty sample document of its action (of
    ``given``'s ``action`` for a policy on ``*``) and ``key_id``'s principal."""
    policy = compile_row(row, engines)
    action = row.action
    if action == "*":
        asked = given.get("action")
        action = asked if asked in ACTIONS else "llm.request"
    base = dict(samples(action)[1])
    if key_id is not None:
        base["principal"] = (await principal_of(conn, [key_id]))[key_id].doc
    doc = _overlay(base, given)
    started = time.perf_counter()
    found, error = await answer(policy, doc, engines)
    return {
        "matched": found if found != "error" else None,
        "effect": policy.effect,
        "outcome": outcome(policy, found),
        "error": error,
        "duration_us": int((time.perf_counter() - started) * 1_000_000),
        "input": doc,
    }


async def impact(
    conn: AsyncConnection,
    row: Any,
    limit: int,
    engines: Mapping[str, PolicyEngine],
    regions: Mapping[str, str],
    zone: tzinfo = UTC,
) -> dict[str, Any]:
    """What the policy alone would have done to the latest ``limit`` usage records."""
    policy = compile_row(row, engines)
    u = usage_records.c
    query = select(usage_records).order_by(u.created_at.desc(), u.id.desc()).limit(limit)
    records = (await conn.execute(query)).all()
    keys = sorted({r.key_id for r in records if r.key_id})
    who_of = await principal_of(conn, keys)
    matched = denied = errors = 0
    examples: list[str] = []
    action = row.action if row.action != "*" else "llm.request"
    for record in records:
        who = who_of.get(record.key_id or "", _ANONYMOUS)
        if action != "llm.request" or not policy.attached(who):
            continue
        found, _ = await answer(policy, _record_document(record, who, regions, zone), engines)
        matched += found is True
        errors += found == "error"
        if would_deny(policy, found):
            denied += 1
            if len(examples) < EXAMPLES:
                examples.append(record.id)
    return {
        "evaluated": len(records),
        "matched": matched,
        "would_deny": denied,
        "errors": errors,
        "examples": examples,
        "since": records[-1].created_at if records else None,
    }


def _record_document(record: Any, who: Who, regions: Mapping[str, str], zone: tzinfo) -> Doc:
    request = llm_request(
        endpoint=record.endpoint,
        inbound="anthropic" if record.endpoint == "messages" else "openai",
        model=record.model,
        stream=bool(record.streamed),
        max_output_tokens=0,
        input_tokens=int(record.prompt_tokens),
        messages=0,
        tools=[],
        user="",
    )
    resource = llm_resource(record.model, record.provider, regions.get(record.provider, ""))
    return document("llm.request", who.doc, request, resource, record.created_at, zone)


def _scope(kind: str, row: Any) -> Scope:
    return Scope(kind, row.id, row.name, tuple(getattr(row, "tags", None) or ()))


_ANONYMOUS = Who.of(())


async def principal_of(conn: AsyncConnection, key_ids: list[str]) -> dict[str, Who]:
    """Each key's principal as it is now (its team, customer and tags); a 404 for an
    unknown key when one is asked for by name."""
    if not key_ids:
        return {}
    k, t, c = virtual_keys.c, teams.c, customers.c
    rows = (await conn.execute(select(virtual_keys).where(k.id.in_(key_ids)))).all()
    team_ids = {r.team_id for r in rows if r.team_id}
    team_rows = {r.id: r for r in await conn.execute(select(teams).where(t.id.in_(team_ids)))}
    customer_ids = {r.customer_id for r in rows if r.customer_id}
    customer_ids |= {r.customer_id for r in team_rows.values() if r.customer_id}
    customer_rows = {
        r.id: r for r in await conn.execute(select(customers).where(c.id.in_(customer_ids)))
    }
    found: dict[str, Who] = {}
    for row in rows:
        chain = [_scope("key", row)]
        team = team_rows.get(row.team_id or "")
        if team is not None:
            chain.append(_scope("team", team))
        customer = customer_rows.get((team.customer_id if team else row.customer_id) or "")
        if customer is not None:
            chain.append(_scope("customer", customer))
        found[row.id] = Who.of(tuple(chain))
    if len(key_ids) == 1 and not found:
        raise NotFound(f"virtual key {key_ids[0]!r} not found")
    return found


def _overlay(base: Doc, given: Mapping[str, Any]) -> Doc:
    """``given`` laid over ``base``: objects merged key by key, anything else replaced."""
    merged = dict(base)
    for name, value in given.items():
        if isinstance(value, Mapping) and isinstance(merged.get(name), dict):
            merged[name] = _overlay(merged[name], value)
        else:
            merged[name] = value
    return merged
