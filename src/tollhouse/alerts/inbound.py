"""``POST /api/webhooks/budget``: budget events from other meters (a LiteLLM proxy…).

The body is LiteLLM's budget-webhook payload as is (``spend``, ``max_budget``,
``event``, ``event_group``, ``event_message``, ``token``, ``team_id``, …), signed with
the operator's ``inbound_webhook_secret`` in ``Tollhouse-Signature`` (the scheme of
``signing.py``), which is this endpoint's only credential — it sits outside the admin
key. The header is checked before the body is read. Answers: 401 bad, missing or
stale signature (429 past ``admin_failures_per_minute`` failures from one address);
400 malformed JSON; 422 a schema error naming the field; 200 stored in the alert
history (once: a repeat of the same event is acknowledged and not stored again) and
routed to the default channels.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from tollhouse.admin.auth import client_address
from tollhouse.alerts.amounts import InboundUsd
from tollhouse.alerts.events import enqueue, insert_event
from tollhouse.alerts.signing import HEADER, SignatureError, check, parse_header
from tollhouse.errors import InvalidJSON, ServiceUnavailable, SignatureInvalid, UnprocessableEvent
from tollhouse.governance.routes import json_response
from tollhouse.money import format_usd
from tollhouse.web.bodies import check_surrogates, read_body


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


async def budget_webhook(request: Request) -> Response:
    state = request.app.state
    secret = state.settings.inbound_webhook_secret
    if secret is None:
        raise ServiceUnavailable(
            "inbound budget webhooks are off: set TOLLHOUSE_INBOUND_WEBHOOK_SECRET"
        )
    # The header is checked before the body is read: an unsigned or stale request costs
    # no more than its headers. Failures count against the sender's address.
    client = client_address(request)
    state.auth_throttle.check(client)
    try:
        parsed = parse_header(request.headers.get(HEADER))
        raw = await read_body(request)
        check(parsed, raw, secret.get_secret_value())
    except SignatureError as exc:
        state.auth_throttle.failed(client)
        raise SignatureInvalid(str(exc)) from None
    try:
        data = json.loads(raw, parse_float=Decimal)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, bad UTF-8, too deep
        raise InvalidJSON(f"Invalid JSON: {str(exc)[:200]}") from None
    if not isinstance(data, dict):
        raise InvalidJSON("Invalid JSON: the body must be a JSON object")
    check_surrogates(raw, data)
    try:
        event = InboundBudgetEvent.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        field = ".".join(str(p) for p in first["loc"]) or "body"
        raise UnprocessableEvent(f"{field}: {first['msg']}", param=field) from None

    # The signed body is the event's identity: a ``Tollhouse-Event-Id`` header is not
    # covered by the signature, so a replay with a new id would be stored again.
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
    async with request.app.state.engine.begin() as conn:
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
        if inserted:
            await enqueue(conn, event_id, None, now)
    if inserted:
        request.app.state.alerts.on_written.set()
        return json_response({"status": "stored", "id": event_id})
    return json_response({"status": "duplicate"})


def _level(event: str) -> str:
    return "critical" if event == "budget_crossed" else "warning"
