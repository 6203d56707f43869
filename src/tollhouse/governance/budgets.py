"""A budget written by its owner's create or update: merged, created or removed, and
kept under the ceiling of the meter's 64-bit nano-dollar counters (``bounds``)."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from tollhouse.errors import ValidationFailed
from tollhouse.governance.bounds import check_budget_cap
from tollhouse.governance.fields import DEFAULT_THRESHOLDS
from tollhouse.governance.models import budgets
from tollhouse.governance.schemas import BudgetCreate, BudgetUpdate
from tollhouse.money import format_usd


def _budget_values(given: dict[str, Any]) -> dict[str, Any]:
    values = dict(given)
    for name in ("max_limit", "hard_limit_ratio"):
        if name in values:  # canonical digits: 1E+11 → 100000000000, 12.50 → 12.5
            values[name] = Decimal(format_usd(values[name]))
    if "alert_thresholds" in values:
        # Exact decimal strings: the JSON column would otherwise need floats.
        values["alert_thresholds"] = [format_usd(t) for t in values["alert_thresholds"]]
    if values.get("alert_channels") is not None:
        values["alert_channels"] = list(dict.fromkeys(values["alert_channels"]))
    return values


async def merge_budget(
    conn: AsyncConnection,
    current_id: str | None,
    spec: BudgetCreate | BudgetUpdate | None,
    now: datetime,
) -> str | None:
    """Apply ``spec`` to the owner's budget: ``None`` removes it, fields merge into an
    existing one, and a missing one is created. Returns the owner's new ``budget_id``."""
    if spec is None:
        if current_id is not None:
            await conn.execute(delete(budgets).where(budgets.c.id == current_id))
        return None
    patch = _budget_values(spec.given())
    if current_id is not None:
        if "max_limit" in patch or "hard_limit_ratio" in patch:
            await _check_cap(conn, current_id, patch)
        if patch:
            await conn.execute(
                update(budgets).where(budgets.c.id == current_id).values(**patch, updated_at=now)
            )
        return current_id
    missing = [name for name in ("max_limit", "reset_duration") if name not in patch]
    if missing:
        raise ValidationFailed(
            "budget.max_limit and budget.reset_duration are both required to create a budget",
            param=f"budget.{missing[0]}",
        )
    budget_id = str(uuid.uuid4())
    values = {
        "calendar_aligned": False,
        "timezone": "UTC",
        "hard_limit_ratio": Decimal(1),
        "alert_thresholds": [format_usd(t) for t in DEFAULT_THRESHOLDS],
        **patch,
        "id": budget_id,
        "last_reset": now,
        "created_at": now,
        "updated_at": now,
    }
    check_budget_cap(values["max_limit"], values["hard_limit_ratio"], _cap_field(patch))
    await conn.execute(insert(budgets).values(**values))
    return budget_id


async def _check_cap(conn: AsyncConnection, budget_id: str, patch: dict[str, Any]) -> None:
    """An update may cross the ceiling through either field: check the merged pair."""
    b = budgets.c
    row = (
        await conn.execute(select(b.max_limit, b.hard_limit_ratio).where(b.id == budget_id))
    ).one()
    max_limit = patch.get("max_limit", row.max_limit)
    ratio = patch.get("hard_limit_ratio", row.hard_limit_ratio)
    check_budget_cap(max_limit, ratio, _cap_field(patch))


def _cap_field(patch: dict[str, Any]) -> str:
    return "hard_limit_ratio" if "hard_limit_ratio" in patch else "max_limit"
