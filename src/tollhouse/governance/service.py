"""Governance CRUD: customers, teams and virtual keys with their budgets and rate limits.

Every function takes an ``AsyncConnection`` and never a request; the admin routes and the
CLI share them. The caller owns the transaction (one per request or command), so a
request that fails half-way writes nothing::

    async with engine.begin() as conn:
        view = await create_key(conn, parse(VirtualKeyCreate, {"name": "ci"}))

Every write bumps ``governance_state.version`` as its **first** statement: in the same
transaction, so a replica (or a server beside the CLI) that sees the new version also
sees the new rows; and first, so that on SQLite the transaction takes the write lock
before it reads anything — concurrent writers then queue on the busy timeout instead of
failing a read-to-write lock upgrade.

A budget or rate-limit row belongs to the one entity that names it: replacing or
deleting the entity's limit deletes the row. Deleting a team or customer detaches its
children (they keep their own limits and lose the parent's), as the schema's
``ON DELETE SET NULL`` does.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import Row, Table, delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from tollhouse.errors import NotFound, ValidationFailed
from tollhouse.governance.budgets import merge_budget
from tollhouse.governance.keys import generate_key
from tollhouse.governance.models import (
    budgets,
    customers,
    governance_state,
    rate_limits,
    teams,
    virtual_keys,
)
from tollhouse.governance.rows import (
    BudgetRow,
    CustomerRow,
    CustomerView,
    KeyRow,
    KeyView,
    RateLimitRow,
    TeamRow,
    TeamView,
    budget_row,
    customer_row,
    key_row,
    rate_limit_row,
    team_row,
)
from tollhouse.governance.schemas import (
    CustomerCreate,
    CustomerUpdate,
    RateLimitCreate,
    RateLimitUpdate,
    TeamCreate,
    TeamUpdate,
    VirtualKeyCreate,
    VirtualKeyUpdate,
    check_rate_limit,
)
from tollhouse.web.validation import PREVIEW, preview

R = TypeVar("R")

CUSTOMER_NOT_FOUND = "Customer not found"
TEAM_NOT_FOUND = "Team not found"
KEY_NOT_FOUND = "Virtual key not found"
_CHUNK = 500


def _tags(tags: list[str] | None) -> list[str] | None:
    """Tags as stored: each once, in the order given; none is NULL."""
    return list(dict.fromkeys(tags)) if tags else None


# --- the change version ---------------------------------------------------------------


async def bump_version(conn: AsyncConnection) -> None:
    """Mark a governance change; call first in every write transaction (see above)."""
    state = governance_state
    result = await conn.execute(
        update(state).where(state.c.id == 1).values(version=state.c.version + 1)
    )
    if result.rowcount == 0:
        await conn.execute(insert(state).values(id=1, version=1))


async def current_version(conn: AsyncConnection) -> int:
    """The change version: running admission engines reload when it moves."""
    value = (await conn.execute(select(governance_state.c.version))).scalar()
    return int(value or 0)


def _now() -> datetime:
    return datetime.now(UTC)


def _new_id() -> str:
    return str(uuid.uuid4())


# --- reading --------------------------------------------------------------------------


async def _one(conn: AsyncConnection, table: Table, entity_id: str, missing: str) -> Row[Any]:
    row = (await conn.execute(select(table).where(table.c.id == entity_id))).first()
    if row is None:
        raise NotFound(missing)
    return row


async def _by_ids(
    conn: AsyncConnection, table: Table, ids: Iterable[str | None], convert: Callable[..., R]
) -> dict[str, R]:
    wanted = sorted({i for i in ids if i is not None})
    found: dict[str, R] = {}
    for start in range(0, len(wanted), _CHUNK):
        chunk = wanted[start : start + _CHUNK]
        for row in await conn.execute(select(table).where(table.c.id.in_(chunk))):
            found[row.id] = convert(row)
    return found


async def _limits(
    conn: AsyncConnection, owners: list[Any]
) -> tuple[dict[str, BudgetRow], dict[str, RateLimitRow]]:
    found_budgets = await _by_ids(conn, budgets, (o.budget_id for o in owners), budget_row)
    found_limits = await _by_ids(
        conn, rate_limits, (o.rate_limit_id for o in owners), rate_limit_row
    )
    return found_budgets, found_limits


async def _customer_views(conn: AsyncConnection, rows: list[CustomerRow]) -> list[CustomerView]:
    found_budgets, found_limits = await _limits(conn, rows)
    children: dict[str, list[TeamRow]] = {row.id: [] for row in rows}
    ids = list(children)
    for start in range(0, len(ids), _CHUNK):
        query = (
            select(teams)
            .where(teams.c.customer_id.in_(ids[start : start + _CHUNK]))
            .order_by(teams.c.created_at, teams.c.id)
        )
        for team in await conn.execute(query):
            children[team.customer_id].append(team_row(team))
    return [
        CustomerView(
            row,
            found_budgets.get(row.budget_id or ""),
            found_limits.get(row.rate_limit_id or ""),
            tuple(children[row.id]),
        )
        for row in rows
    ]


async def _team_views(conn: AsyncConnection, rows: list[TeamRow]) -> list[TeamView]:
    found_budgets, found_limits = await _limits(conn, rows)
    parents = await _by_ids(conn, customers, (r.customer_id for r in rows), customer_row)
    return [
        TeamView(
            row,
            parents.get(row.customer_id or ""),
            found_budgets.get(row.budget_id or ""),
            found_limits.get(row.rate_limit_id or ""),
        )
        for row in rows
    ]


async def _key_views(conn: AsyncConnection, rows: list[KeyRow]) -> list[KeyView]:
    found_budgets, found_limits = await _limits(conn, rows)
    found_teams = await _by_ids(conn, teams, (r.team_id for r in rows), team_row)
    found_customers = await _by_ids(conn, customers, (r.customer_id for r in rows), customer_row)
    return [
        KeyView(
            row,
            found_teams.get(row.team_id or ""),
            found_customers.get(row.customer_id or ""),
            found_budgets.get(row.budget_id or ""),
            found_limits.get(row.rate_limit_id or ""),
        )
        for row in rows
    ]


async def get_customer(conn: AsyncConnection, customer_id: str) -> CustomerView:
    """One customer with its budget, rate limit and teams; ``NotFound`` if unknown."""
    row = customer_row(await _one(conn, customers, customer_id, CUSTOMER_NOT_FOUND))
    return (await _customer_views(conn, [row]))[0]


async def list_customers(conn: AsyncConnection) -> list[CustomerView]:
    """Every customer, oldest first."""
    query = select(customers).order_by(customers.c.created_at, customers.c.id)
    rows = [customer_row(row) for row in await conn.execute(query)]
    return await _customer_views(conn, rows)


async def get_team(conn: AsyncConnection, team_id: str) -> TeamView:
    """One team with its customer, budget and rate limit; ``NotFound`` if unknown."""
    row = team_row(await _one(conn, teams, team_id, TEAM_NOT_FOUND))
    return (await _team_views(conn, [row]))[0]


async def list_teams(conn: AsyncConnection, *, customer_id: str | None = None) -> list[TeamView]:
    """Every team, oldest first; only ``customer_id``'s when given (unknown: none)."""
    query = select(teams).order_by(teams.c.created_at, teams.c.id)
    if customer_id is not None:
        query = query.where(teams.c.customer_id == customer_id)
    rows = [team_row(row) for row in await conn.execute(query)]
    return await _team_views(conn, rows)


async def get_key(conn: AsyncConnection, key_id: str) -> KeyView:
    """One virtual key (by id, not by value) with its parents and limits."""
    row = key_row(await _one(conn, virtual_keys, key_id, KEY_NOT_FOUND))
    return (await _key_views(conn, [row]))[0]


async def list_keys(
    conn: AsyncConnection, *, team_id: str | None = None, customer_id: str | None = None
) -> list[KeyView]:
    """Every virtual key, oldest first, optionally only a team's or a customer's."""
    query = select(virtual_keys).order_by(virtual_keys.c.created_at, virtual_keys.c.id)
    if team_id is not None:
        query = query.where(virtual_keys.c.team_id == team_id)
    if customer_id is not None:
        query = query.where(virtual_keys.c.customer_id == customer_id)
    rows = [key_row(row) for row in await conn.execute(query)]
    return await _key_views(conn, rows)


# --- budgets and rate limits ----------------------------------------------------------


_RATE_FIELDS = (
    "token_max_limit",
    "token_reset_duration",
    "request_max_limit",
    "request_reset_duration",
)


async def _merge_rate_limit(
    conn: AsyncConnection,
    current_id: str | None,
    spec: RateLimitCreate | RateLimitUpdate | None,
    now: datetime,
) -> str | None:
    """As ``budgets.merge_budget`` for rate limits; ``null`` in a field removes that limit."""
    if spec is None:
        if current_id is not None:
            await conn.execute(delete(rate_limits).where(rate_limits.c.id == current_id))
        return None
    patch = spec.given()
    current: dict[str, Any] = {}
    if current_id is not None:
        row = await _one(conn, rate_limits, current_id, "Rate limit not found")
        current = {name: row._mapping[name] for name in _RATE_FIELDS}
    check_rate_limit({**current, **patch})
    if current_id is not None:
        if patch:
            await conn.execute(
                update(rate_limits)
                .where(rate_limits.c.id == current_id)
                .values(**patch, updated_at=now)
            )
        return current_id
    rate_limit_id = _new_id()
    await conn.execute(
        insert(rate_limits).values(
            **patch,
            id=rate_limit_id,
            token_last_reset=now,
            request_last_reset=now,
            created_at=now,
            updated_at=now,
        )
    )
    return rate_limit_id


async def _merge_limits(
    conn: AsyncConnection, owner: Any, given: dict[str, Any], values: dict[str, Any], now: datetime
) -> None:
    if "budget" in given:
        values["budget_id"] = await merge_budget(conn, owner.budget_id, given["budget"], now)
    if "rate_limit" in given:
        values["rate_limit_id"] = await _merge_rate_limit(
            conn, owner.rate_limit_id, given["rate_limit"], now
        )


async def _delete_limits(conn: AsyncConnection, owner: Any) -> None:
    if owner.budget_id is not None:
        await conn.execute(delete(budgets).where(budgets.c.id == owner.budget_id))
    if owner.rate_limit_id is not None:
        await conn.execute(delete(rate_limits).where(rate_limits.c.id == owner.rate_limit_id))


async def _require(conn: AsyncConnection, table: Table, entity_id: str, field: str) -> None:
    """A referenced parent must exist: an unknown id is the client's error (400)."""
    found = await conn.scalar(select(table.c.id).where(table.c.id == entity_id))
    if found is None:
        noun = "team" if table is teams else "customer"
        shown = repr(entity_id) if len(entity_id) <= PREVIEW else f"{preview(entity_id)!r}"
        raise ValidationFailed(f"{field} {shown} does not name a {noun}", param=field)


# --- customers ------------------------------------------------------------------------


async def create_customer(conn: AsyncConnection, body: CustomerCreate) -> CustomerView:
    """Create a customer with its optional budget and rate limit."""
    await bump_version(conn)
    now, customer_id = _now(), _new_id()
    await conn.execute(
        insert(customers).values(
            id=customer_id,
            name=body.name,
            budget_id=await merge_budget(conn, None, body.budget, now),
            rate_limit_id=await _merge_rate_limit(conn, None, body.rate_limit, now),
            created_at=now,
            updated_at=now,
        )
    )
    return await get_customer(conn, customer_id)


async def update_customer(
    conn: AsyncConnection, customer_id: str, body: CustomerUpdate
) -> CustomerView:
    """Merge ``body`` into the customer (fields left out are unchanged)."""
    await bump_version(conn)
    row = await _one(conn, customers, customer_id, CUSTOMER_NOT_FOUND)
    now, given = _now(), body.given()
    values: dict[str, Any] = {"updated_at": now}
    if "name" in given:
        values["name"] = body.name
    await _merge_limits(conn, row, given, values, now)
    await conn.execute(update(customers).where(customers.c.id == customer_id).values(**values))
    return await get_customer(conn, customer_id)


async def delete_customer(conn: AsyncConnection, customer_id: str) -> None:
    """Delete a customer and its limits; its teams and keys are detached, not deleted."""
    await bump_version(conn)
    row = await _one(conn, customers, customer_id, CUSTOMER_NOT_FOUND)
    now = _now()
    for child in (teams, virtual_keys):
        await conn.execute(
            update(child)
            .where(child.c.customer_id == customer_id)
            .values(customer_id=None, updated_at=now)
        )
    await conn.execute(delete(customers).where(customers.c.id == customer_id))
    await _delete_limits(conn, row)


# --- teams ----------------------------------------------------------------------------


async def create_team(conn: AsyncConnection, body: TeamCreate) -> TeamView:
    """Create a team, under a customer when ``customer_id`` is given (it must exist)."""
    await bump_version(conn)
    if body.customer_id is not None:
        await _require(conn, customers, body.customer_id, "customer_id")
    now, team_id = _now(), _new_id()
    await conn.execute(
        insert(teams).values(
            id=team_id,
            name=body.name,
            customer_id=body.customer_id,
            budget_id=await merge_budget(conn, None, body.budget, now),
            rate_limit_id=await _merge_rate_limit(conn, None, body.rate_limit, now),
            on_meter_failure=body.on_meter_failure,
            tags=_tags(body.tags),
            created_at=now,
            updated_at=now,
        )
    )
    return await get_team(conn, team_id)


async def update_team(conn: AsyncConnection, team_id: str, body: TeamUpdate) -> TeamView:
    """Merge ``body`` into the team; ``customer_id: null`` detaches it from its customer."""
    await bump_version(conn)
    row = await _one(conn, teams, team_id, TEAM_NOT_FOUND)
    now, given = _now(), body.given()
    values: dict[str, Any] = {"updated_at": now}
    if "name" in given:
        values["name"] = body.name
    if "on_meter_failure" in given:
        values["on_meter_failure"] = body.on_meter_failure
    if "tags" in given:
        values["tags"] = _tags(body.tags)
    if "customer_id" in given:
        if body.customer_id is not None:
            await _require(conn, customers, body.customer_id, "customer_id")
        values["customer_id"] = body.customer_id
    await _merge_limits(conn, row, given, values, now)
    await conn.execute(update(teams).where(teams.c.id == team_id).values(**values))
    return await get_team(conn, team_id)


async def delete_team(conn: AsyncConnection, team_id: str) -> None:
    """Delete a team and its limits; its keys are detached, not deleted."""
    await bump_version(conn)
    row = await _one(conn, teams, team_id, TEAM_NOT_FOUND)
    await conn.execute(
        update(virtual_keys)
        .where(virtual_keys.c.team_id == team_id)
        .values(team_id=None, updated_at=_now())
    )
    await conn.execute(delete(teams).where(teams.c.id == team_id))
    await _delete_limits(conn, row)


# --- virtual keys ---------------------------------------------------------------------


async def create_key(conn: AsyncConnection, body: VirtualKeyCreate) -> KeyView:
    """Create a virtual key; the returned view alone carries the plaintext ``value``."""
    await bump_version(conn)
    if body.team_id is not None:
        await _require(conn, teams, body.team_id, "team_id")
    if body.customer_id is not None:
        await _require(conn, customers, body.customer_id, "customer_id")
    now, key_id = _now(), _new_id()
    value, key_hash, key_hint = generate_key()
    await conn.execute(
        insert(virtual_keys).values(
            id=key_id,
            name=body.name,
            description=body.description or None,
            key_hash=key_hash,
            key_hint=key_hint,
            is_active=body.is_active,
            expires_at=body.expires_at,
            team_id=body.team_id,
            customer_id=body.customer_id,
            budget_id=await merge_budget(conn, None, body.budget, now),
            rate_limit_id=await _merge_rate_limit(conn, None, body.rate_limit, now),
            allowed_models=body.allowed_models,
            allowed_providers=body.allowed_providers,
            max_parallel_requests=body.max_parallel_requests,
            on_meter_failure=body.on_meter_failure,
            tags=_tags(body.tags),
            created_at=now,
            updated_at=now,
        )
    )
    view = await get_key(conn, key_id)
    return KeyView(view.key, view.team, view.customer, view.budget, view.rate_limit, value)


_KEY_FIELDS = (
    "name",
    "is_active",
    "expires_at",
    "allowed_models",
    "allowed_providers",
    "max_parallel_requests",
    "on_meter_failure",
)


async def update_key(conn: AsyncConnection, key_id: str, body: VirtualKeyUpdate) -> KeyView:
    """Merge ``body`` into the key. Setting ``team_id`` clears ``customer_id`` and the
    reverse; ``null`` clears a field that may be empty."""
    await bump_version(conn)
    row = await _one(conn, virtual_keys, key_id, KEY_NOT_FOUND)
    now, given = _now(), body.given()
    values: dict[str, Any] = {"updated_at": now}
    values.update({name: given[name] for name in _KEY_FIELDS if name in given})
    if "description" in given:
        values["description"] = body.description or None
    if "tags" in given:
        values["tags"] = _tags(body.tags)
    if "team_id" in given:
        values["team_id"] = body.team_id
        if body.team_id is not None:
            await _require(conn, teams, body.team_id, "team_id")
            values["customer_id"] = None
    if "customer_id" in given:
        values["customer_id"] = body.customer_id
        if body.customer_id is not None:
            await _require(conn, customers, body.customer_id, "customer_id")
            values["team_id"] = None
    await _merge_limits(conn, row, given, values, now)
    await conn.execute(update(virtual_keys).where(virtual_keys.c.id == key_id).values(**values))
    return await get_key(conn, key_id)


async def rotate_key(conn: AsyncConnection, key_id: str) -> KeyView:
    """A new secret value for the key, returned once; the old value stops working as
    soon as the running gateways reload (the version bump). Its id, limits, spend and
    history stay: the key is the same, only its secret changed."""
    await bump_version(conn)
    await _one(conn, virtual_keys, key_id, KEY_NOT_FOUND)
    value, key_hash, key_hint = generate_key()
    await conn.execute(
        update(virtual_keys)
        .where(virtual_keys.c.id == key_id)
        .values(key_hash=key_hash, key_hint=key_hint, updated_at=_now())
    )
    view = await get_key(conn, key_id)
    return KeyView(view.key, view.team, view.customer, view.budget, view.rate_limit, value)


async def delete_key(conn: AsyncConnection, key_id: str) -> None:
    """Delete a virtual key and its limits; requests with it are refused at once."""
    await bump_version(conn)
    row = await _one(conn, virtual_keys, key_id, KEY_NOT_FOUND)
    await conn.execute(delete(virtual_keys).where(virtual_keys.c.id == key_id))
    await _delete_limits(conn, row)


# --- usage and statistics -------------------------------------------------------------


async def usage_targets(
    conn: AsyncConnection,
    *,
    virtual_key_id: str | None = None,
    team_id: str | None = None,
    customer_id: str | None = None,
) -> tuple[list[str], list[str]]:
    """The budget ids and rate-limit ids of one entity (not its parents' or children's)."""
    if virtual_key_id is not None:
        row = await _one(conn, virtual_keys, virtual_key_id, KEY_NOT_FOUND)
    elif team_id is not None:
        row = await _one(conn, teams, team_id, TEAM_NOT_FOUND)
    elif customer_id is not None:
        row = await _one(conn, customers, customer_id, CUSTOMER_NOT_FOUND)
    else:
        raise ValidationFailed("give one of virtual_key_id, team_id, customer_id")
    budget_ids = [row.budget_id] if row.budget_id is not None else []
    rate_limit_ids = [row.rate_limit_id] if row.rate_limit_id is not None else []
    return budget_ids, rate_limit_ids


async def restart_windows(
    conn: AsyncConnection, budget_ids: list[str], rate_limit_ids: list[str]
) -> None:
    """Start new windows now (``last_reset`` = now), so nothing before counts.

    The admission engine's ``reset_usage`` calls this and then zeroes its counters; the
    route calls it directly when no engine runs in the process.
    """
    await bump_version(conn)
    now = _now()
    if budget_ids:
        await conn.execute(
            update(budgets).where(budgets.c.id.in_(budget_ids)).values(last_reset=now)
        )
    if rate_limit_ids:
        await conn.execute(
            update(rate_limits)
            .where(rate_limits.c.id.in_(rate_limit_ids))
            .values(token_last_reset=now, request_last_reset=now)
        )


async def database_counts(conn: AsyncConnection) -> dict[str, int]:
    """Row counts of the governance tables, and the change version."""
    counts: dict[str, int] = {}
    for name, table in (
        ("virtual_keys_count", virtual_keys),
        ("teams_count", teams),
        ("customers_count", customers),
        ("budgets_count", budgets),
        ("rate_limits_count", rate_limits),
    ):
        counts[name] = int(await conn.scalar(select(func.count()).select_from(table)) or 0)
    counts["version"] = await current_version(conn)
    return counts
