"""What the ledger holds for one payer since a moment: the totals counters start from.

The admission engine keeps its counters in memory or in Redis; when a counter is first
used, or Redis lost it, its committed value is rebuilt from these totals (see
docs/governance.md, *After a restart*, and docs/deployment.md, *Rebuild*). Each total
is one indexed query on ``(payer column, created_at)``.

- ``total``: the sum of one measure over a payer's records in ``[since, until)``;
- ``total_with_recent``: the same sum since ``since``, with the ids of the records
  created at or after ``cut`` listed, so that settles of those records still on their
  way to a rebuilt counter can be told apart from the ones the sum already includes.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from sqlalchemy import and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncConnection

from tollhouse.ledger.models import usage_records
from tollhouse.money import to_nanos

# What a total adds up: cost in nano-dollars, prompt + completion tokens, or records.
Measure = Literal["cost", "tokens", "requests"]
# Whose records: a virtual key's, a team's, a customer's, a prepaid account's, or the
# agent sessions' of a tenant (``"<kind>:<id>"``) or of one of its personas
# (``"<kind>:<id>/<persona>"``).
Payer = Literal["key", "team", "customer", "account", "agent"]

_t = usage_records.c
DEFAULT_PERSONA = "default"  # the agent budgets' persona of a session without one
_PAYER_COLUMN = {
    "key": _t.key_id,
    "team": _t.team_id,
    "customer": _t.customer_id,
    "account": _t.credit_account_id,
}
_SUM: dict[Measure, Any] = {
    "cost": func.coalesce(func.sum(_t.cost), 0),
    "tokens": func.coalesce(func.sum(_t.prompt_tokens + _t.completion_tokens), 0),
    "requests": func.count(),
}


def _whose(payer: Payer, payer_id: str) -> Any:
    # A refused request (recorded at no cost so that the log shows it) consumed nothing:
    # it is no request of a rate limit, and no counter rebuilt from the ledger counts it.
    counted = _t.status != "refused"
    if payer != "agent":
        return and_(_PAYER_COLUMN[payer] == payer_id, counted)
    tenant, _, persona = payer_id.partition("/")
    kind, _, ident = tenant.partition(":")
    whose = and_(_PAYER_COLUMN[kind] == ident, _t.session_id.is_not(None), counted)
    if not persona:
        return whose
    if persona == DEFAULT_PERSONA:  # a session without a persona records none
        return and_(whose, or_(_t.persona_id.is_(None), _t.persona_id == persona))
    return and_(whose, _t.persona_id == persona)


async def total(
    conn: AsyncConnection,
    measure: Measure,
    payer: Payer,
    payer_id: str,
    since: datetime,
    until: datetime | None = None,
) -> int:
    """``measure`` over ``payer_id``'s records created in ``[since, until)``; cost in
    whole nano-dollars (the ledger stores it exactly, to the nano-dollar)."""
    query = select(_SUM[measure]).where(_whose(payer, payer_id), _t.created_at >= since)
    if until is not None:
        query = query.where(_t.created_at < until)
    value = (await conn.execute(query)).scalar_one()
    if measure == "cost":
        return to_nanos(Decimal(value))
    return int(value)


async def total_with_recent(
    conn: AsyncConnection,
    measure: Measure,
    payer: Payer,
    payer_id: str,
    since: datetime,
    cut: datetime,
) -> tuple[int, list[str]]:
    """``measure`` over ``payer_id``'s records since ``since``, and the ids of those
    created at or after ``cut`` (``cut`` is raised to ``since`` when earlier)."""
    cut = max(cut, since)
    summed = await total(conn, measure, payer, payer_id, since, until=cut)
    rows = await conn.execute(
        select(_t.id, _t.cost, _t.prompt_tokens, _t.completion_tokens).where(
            _whose(payer, payer_id), _t.created_at >= cut
        )
    )
    ids = []
    for row in rows:
        ids.append(row.id)
        if measure == "cost":
            summed += to_nanos(row.cost)
        elif measure == "tokens":
            summed += row.prompt_tokens + row.completion_tokens
        else:
            summed += 1
    return summed, ids
