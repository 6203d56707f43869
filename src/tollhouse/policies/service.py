"""Policies stored: create, read, update, delete — each taking a connection, the caller
owning the transaction.

A condition is compiled by its engine before anything is written (an invalid one is a
400 naming the error), attachments must name customers, teams and keys that exist, and
every write bumps the governance version, so every replica reloads its policies with its
snapshot (as it does for keys and budgets) and the server that wrote reloads at once.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, delete, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from tollhouse.errors import Conflict, NotFound, ValidationFailed
from tollhouse.governance.models import customers, teams, virtual_keys
from tollhouse.governance.service import bump_version
from tollhouse.ledger.service import decode_cursor, encode_cursor
from tollhouse.policies.engines import Condition, PolicyEngine, PolicyInvalid
from tollhouse.policies.models import policies, policy_decisions
from tollhouse.policies.schemas import Attachment, OwnerAttachment, PolicyCreate, PolicyUpdate

NOT_FOUND = "Policy not found"
_p = policies.c
_OWNERS = {"customer": customers, "team": teams, "key": virtual_keys}


async def list_policies(conn: AsyncConnection, action: str | None = None) -> Sequence[Any]:
    query = select(policies).order_by(_p.priority.desc(), _p.name)
    if action is not None:
        query = query.where(_p.action == action)
    return (await conn.execute(query)).all()


async def get_policy(conn: AsyncConnection, policy_id: str) -> Any:
    row = (await conn.execute(select(policies).where(_p.id == policy_id))).one_or_none()
    if row is None:
        raise NotFound(NOT_FOUND)
    return row


def compile_condition(
    engines: Mapping[str, PolicyEngine],
    engine: str,
    condition: str | None,
    rule: str | None,
    action: str,
) -> Condition | None:
    """The condition compiled, or a 400 naming what is wrong with it."""
    if condition is None:
        if rule is not None:
            raise PolicyInvalid("a rule needs a condition to query", param="rule")
        return None
    found = engines.get(engine)
    if found is None:
        raise ValidationFailed(
            f"engine: {engine} is not configured here (docs/policies.md, *Engines*)",
            param="engine",
        )
    return found.compile(condition, rule, action)


async def create_policy(
    conn: AsyncConnection, body: PolicyCreate, engines: Mapping[str, PolicyEngine]
) -> Any:
    compile_condition(engines, body.engine, body.condition, body.rule, body.action)
    await _require_owners(conn, body.attachments)
    await bump_version(conn)
    now, policy_id = datetime.now(UTC), f"pol_{uuid.uuid4().hex}"
    values = body.model_dump(exclude={"attachments"})
    await _write(
        conn,
        insert(policies).values(
            id=policy_id,
            attachments=_stored(body.attachments),
            created_at=now,
            updated_at=now,
            **values,
        ),
        body.name,
    )
    return await get_policy(conn, policy_id)


async def update_policy(
    conn: AsyncConnection,
    policy_id: str,
    body: PolicyUpdate,
    engines: Mapping[str, PolicyEngine],
) -> Any:
    row = await get_policy(conn, policy_id)
    given = body.given()
    merged = {**row._mapping, **given}
    if {"engine", "condition", "rule", "action"} & given.keys():
        compile_condition(
            engines, merged["engine"], merged["condition"], merged["rule"], merged["action"]
        )
    values: dict[str, Any] = {k: v for k, v in given.items() if k != "attachments"}
    if "attachments" in given:
        await _require_owners(conn, body.attachments or [])
        values["attachments"] = _stored(body.attachments or [])
    await bump_version(conn)
    statement = update(policies).where(_p.id == policy_id)
    await _write(conn, statement.values(updated_at=datetime.now(UTC), **values), merged["name"])
    return await get_policy(conn, policy_id)


async def delete_policy(conn: AsyncConnection, policy_id: str) -> None:
    await get_policy(conn, policy_id)
    await bump_version(conn)
    await conn.execute(delete(policies).where(_p.id == policy_id))


async def _write(conn: AsyncConnection, statement: Any, name: str) -> None:
    try:
        async with conn.begin_nested():
            await conn.execute(statement)
    except IntegrityError:
        raise Conflict(f"a policy named {name!r} exists already") from None


async def _require_owners(conn: AsyncConnection, attachments: list[Attachment]) -> None:
    for attachment in attachments:
        if not isinstance(attachment, OwnerAttachment):
            continue
        table = _OWNERS[attachment.type]
        found = await conn.scalar(select(table.c.id).where(table.c.id == attachment.id))
        if found is None:
            raise ValidationFailed(
                f"attachments: there is no {attachment.type} {attachment.id!r}",
                param="attachments",
            )


def _stored(attachments: list[Attachment]) -> list[dict[str, str]]:
    return [a.model_dump(exclude_none=True) for a in attachments]


async def list_decisions(
    conn: AsyncConnection,
    *,
    policy_id: str | None,
    decision: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[Any], str | None]:
    """One page of the decision log, newest first, and the next page's cursor."""
    d = policy_decisions.c
    clauses: list[Any] = []
    if policy_id is not None:
        clauses.append(d.policy_id == policy_id)
    if decision is not None:
        if decision not in ("allow", "deny"):
            raise ValidationFailed("decision is allow or deny", param="decision")
        clauses.append(d.decision == decision)
    if cursor:
        at, last_id = decode_cursor(cursor)
        clauses.append(or_(d.created_at < at, and_(d.created_at == at, d.id < last_id)))
    query = (
        select(policy_decisions)
        .where(*clauses)
        .order_by(d.created_at.desc(), d.id.desc())
        .limit(limit + 1)
    )
    rows = list((await conn.execute(query)).all())
    if len(rows) <= limit:
        return rows, None
    rows = rows[:limit]
    return rows, encode_cursor(rows[-1].created_at, rows[-1].id)
