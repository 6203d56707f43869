"""Alert events: one per (budget, threshold, window), written with its outbox deliveries.

``record`` inserts the event under a unique ``dedup_key``; the replica whose insert wins
also writes one pending delivery per channel, in the same transaction. Replicas that see
the same crossing insert nothing, so an alert is sent once however many noticed it.

The payload carries LiteLLM's budget-webhook field names (``spend``, ``max_budget``,
``token``, ``team_id``, ``customer_id``, ``key_alias``, ``team_alias``,
``projected_exceeded_date``, ``projected_spend``, ``event``, ``event_group``,
``event_message``) so receivers written for LiteLLM work unchanged, and ours beside them
(``event_id``, ``threshold``, ``percentage``, ``window_start``/``window_end``,
``scope``…). Money in the payload is a JSON number written digit for digit.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.ext.asyncio import AsyncConnection

from tollhouse.alerts.amounts import column_usd
from tollhouse.alerts.models import alert_deliveries, alert_events, notification_channels
from tollhouse.db import insert_ignoring
from tollhouse.money import format_usd
from tollhouse.thresholds import FULL


@dataclass(frozen=True, slots=True)
class BudgetAlert:
    """A budget reached ``threshold`` of ``max_limit`` in the window ``[start, end)``."""

    budget_id: str
    scope_kind: str  # key | team | customer
    scope_id: str
    scope_name: str
    threshold: Decimal
    spend: Decimal
    max_limit: Decimal
    window_start: datetime
    window_end: datetime
    refused: bool  # reached by a refusal (the worst case no longer fits), not by spend
    projected: datetime | None
    channel_ids: tuple[str, ...] | None  # None: the default channels
    key_id: str | None = None
    team_id: str | None = None
    customer_id: str | None = None

    @property
    def dedup_key(self) -> str:
        return f"budget:{self.budget_id}:{self.threshold}:{self.window_start.isoformat()}"

    @property
    def level(self) -> str:
        return "critical" if self.threshold >= FULL else "warning"

    @property
    def event(self) -> str:
        return "budget_crossed" if self.threshold >= FULL else "threshold_crossed"


def payload(alert: BudgetAlert, event_id: str, now: datetime) -> dict[str, Any]:
    percent = alert.threshold * 100
    who = f"{alert.scope_kind} '{alert.scope_name}'"
    reached = "was refused a request" if alert.refused else "spent"
    message = (
        f"Budget alert: {who} {reached} {format_usd(alert.spend)} USD of "
        f"{format_usd(alert.max_limit)} USD ({format_usd(percent)} % threshold) in the window "
        f"{alert.window_start.isoformat()} – {alert.window_end.isoformat()}."
    )
    return {
        # LiteLLM's names (WebhookEvent)
        "spend": alert.spend,
        "max_budget": alert.max_limit,
        "token": alert.key_id,
        "customer_id": alert.customer_id,
        "team_id": alert.team_id,
        "key_alias": alert.scope_name if alert.scope_kind == "key" else None,
        "team_alias": alert.scope_name if alert.scope_kind == "team" else None,
        "projected_exceeded_date": alert.projected.isoformat() if alert.projected else None,
        "projected_spend": None,
        "event": alert.event,
        "event_group": alert.scope_kind,
        "event_message": message,
        # Ours
        "event_id": event_id,
        "level": alert.level,
        "threshold": alert.threshold,
        "percentage": percent,
        "scope": {"kind": alert.scope_kind, "id": alert.scope_id, "name": alert.scope_name},
        "budget_id": alert.budget_id,
        "window_start": alert.window_start.isoformat(),
        "window_end": alert.window_end.isoformat(),
        "refused": alert.refused,
        "created_at": now.isoformat(),
    }


async def insert_event(conn: AsyncConnection, **values: Any) -> bool:
    """Store an event unless one with its ``dedup_key`` exists; ``True`` when stored.

    ``spend`` and ``max_limit`` go into their columns rounded half-even to the
    nano-dollar (``amounts.column_usd``); the payload keeps what the sender wrote."""
    for name in ("spend", "max_limit"):
        if isinstance(values.get(name), Decimal):
            values[name] = column_usd(values[name])
    statement = insert_ignoring(alert_events, conn.dialect.name, "dedup_key").values(**values)
    return bool((await conn.execute(statement)).rowcount == 1)


async def record(conn: AsyncConnection, alert: BudgetAlert, now: datetime) -> str | None:
    """Write the event and its deliveries; ``None`` when another writer had it already."""
    event_id = str(uuid.uuid4())
    stored = await insert_event(
        conn,
        id=event_id,
        dedup_key=alert.dedup_key,
        source="tollhouse",
        event=alert.event,
        level=alert.level,
        budget_id=alert.budget_id,
        scope_kind=alert.scope_kind,
        scope_id=alert.scope_id,
        scope_name=alert.scope_name,
        threshold=alert.threshold,
        spend=alert.spend,
        max_limit=alert.max_limit,
        window_start=alert.window_start,
        window_end=alert.window_end,
        payload=json_safe(payload(alert, event_id, now)),
        created_at=now,
    )
    if not stored:
        return None
    await enqueue(conn, event_id, alert.channel_ids, now)
    return event_id


async def enqueue(
    conn: AsyncConnection, event_id: str, channel_ids: tuple[str, ...] | None, now: datetime
) -> int:
    """One pending delivery per channel (the budget's, else every default channel)."""
    if channel_ids is None:
        query = select(notification_channels.c.id).where(notification_channels.c.is_default)
        channel_ids = tuple((await conn.execute(query)).scalars())
    rows = [
        {
            "id": str(uuid.uuid4()),
            "event_id": event_id,
            "channel_id": channel_id,
            "status": "pending",
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
        }
        for channel_id in dict.fromkeys(channel_ids)
    ]
    if rows:
        await conn.execute(insert(alert_deliveries), rows)
    return len(rows)


# Stored payloads keep these as exact decimal strings (a JSON column would turn numbers
# into floats); ``encode`` writes them as bare JSON numbers, digit for digit.
NUMBER_FIELDS = (
    "spend",
    "max_budget",
    "threshold",
    "percentage",
    "projected_spend",
    # credit balance alerts (alerts/balance.py)
    "balance",
    "reserved",
    "available",
    "low_balance",
    "overdraft_limit",
)


def json_safe(value: dict[str, Any]) -> dict[str, Any]:
    return {k: format_usd(v) if isinstance(v, Decimal) else v for k, v in value.items()}


def _number(text: str) -> str | None:
    """``text`` as a JSON number, or ``None`` when it is not one (``"unknown"``)."""
    try:
        value = Decimal(text)
    except ArithmeticError:  # decimal.InvalidOperation
        return None
    return str(value) if value.is_finite() else None


def encode(stored: dict[str, Any]) -> bytes:
    """The payload as sent: compact JSON, money and ratios as exact numbers; a number
    field holding no number (an inbound event's ``"max_budget": "unknown"``) is null."""
    marked = dict(stored)
    numbers: dict[str, str] = {}
    for name in NUMBER_FIELDS:
        value = marked.get(name)
        if isinstance(value, str):
            digits = _number(value)
            if digits is None:
                marked[name] = None
                continue
            token = f"\u0000{name}\u0000"
            numbers[json.dumps(token)] = digits
            marked[name] = token
    text = json.dumps(marked, separators=(",", ":"), ensure_ascii=False)
    for quoted, digits in numbers.items():
        text = text.replace(quoted, digits)
    return text.encode("utf-8")
