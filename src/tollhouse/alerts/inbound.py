"""``POST /api/webhooks/budget``: budget events from other meters (a LiteLLM proxy…).

The body is LiteLLM's budget-webhook payload as is (``spend``, ``max_budget``,
``event``, ``event_group``, ``event_message``, ``token``, ``team_id``, …), signed with
the operator's ``inbound_webhook_secret`` in ``Tollhouse-Signature`` (the scheme of
``signing.py``), which is this endpoint's only credential — it sits outside the admin
key. The header is checked before the body is read (``routes.budget_webhook``).
Answers: 401 bad, missing or stale signature (429 past ``admin_failures_per_minute``
failures from one address); 400 malformed JSON (the body reader's rules, NUL included);
422 a schema error naming the field; 200 stored in the alert history (once: a repeat of
the same event is acknowledged and not stored again) and routed to the default channels.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy.ext.asyncio import AsyncConnection

from tollhouse.alerts.amounts import InboundUsd
from tollhouse.alerts.events import enqueue, insert_event
from tollhouse.errors import UnprocessableEvent
from tollhouse.money import format_usd
from tollhouse.web.bodies import loads_object
from tollhouse.web.validation import no_nul


class InboundBudgetEvent(BaseModel):
    """LiteLLM's ``WebhookEvent``; unknown fields are kept in the stored payload."""

    model_config = ConfigDict(extra="allow", strict=False)

    spend: InboundUsd
    max_budget: InboundUsd | None = None
    soft_budget: Decimal | None = None
    token: str | None = None
    customer_id: str | None = None
    user_id: str | None = None
    team_id: str | None = None
    team_alias: str | None = None
    user_email: str | None = None
    key_alias: str | None = None
    projected_exceeded_date: str | None = None
    projected_spend: Decimal | None = None
    event: Literal[
        "budget_crossed",
        "soft_budget_crossed",
        "threshold_crossed",
        "projected_limit_exceeded",
        "key_created",
        "internal_user_created",
        "spend_tracked",
    ]
    event_group: Literal["internal_user", "user", "key", "team", "proxy", "customer", "end_user"]
    event_message: str = Field(min_length=1)


def read_event(raw: bytes, max_depth: int) -> tuple[InboundBudgetEvent, dict[str, Any]]:
    """The signed body as an event, and as sent; 400 not JSON, 422 not an event."""
    data = loads_object(raw, max_depth, exact=True)
    no_nul(data)
    try:
        return InboundBudgetEvent.model_validate(data), data
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = ".".join(str(p) for p in first["loc"]) or "body"
        raise UnprocessableEvent(f"{field}: {first['msg']}", param=field) from None


async def store_event(
    conn: AsyncConnection, event: InboundBudgetEvent, data: dict[str, Any], raw: bytes
) -> str | None:
    """Keep the event in the alert history, with its deliveries to the default channels;
    its id, or ``None`` when the same signed body was received before.

    The signed body is the event's identity: a ``Tollhouse-Event-Id`` header is not
    covered by the signature, so a replay with a new id would be stored again."""
    dedup = hashlib.sha256(raw).hexdigest()
    now, event_id = datetime.now(UTC), str(uuid.uuid4())
    stored = {k: format_usd(v) if isinstance(v, Decimal) else v for k, v in data.items()}
    percentage = format_usd(event.spend * 100 / event.max_budget) if event.max_budget else "unknown"
    scope_id = event.token or event.team_id or event.customer_id or event.user_id
    # What our channels' templates read, from the sender's fields.
    stored.update(
        event_id=event_id,
        source="inbound",
        level=_level(event.event),
        percentage=percentage,
        max_budget=format_usd(event.max_budget) if event.max_budget is not None else "unknown",
        window_start="unknown",
        window_end="unknown",
        scope={
            "kind": event.event_group,
            "id": scope_id or "unknown",
            "name": event.key_alias or event.team_alias or event.user_email or "unknown",
        },
    )
    inserted = await insert_event(
        conn,
        id=event_id,
        dedup_key=f"inbound:{dedup}"[:200],
        source="inbound",
        event=event.event,
        level=_level(event.event),
        scope_kind=event.event_group,
        scope_id=scope_id,
        scope_name=event.key_alias or event.team_alias,
        spend=event.spend,
        max_limit=event.max_budget,
        payload=stored,
        created_at=now,
    )
    if not inserted:
        return None
    await enqueue(conn, event_id, None, now)
    return event_id


def _level(event: str) -> str:
    return "critical" if event == "budget_crossed" else "warning"
