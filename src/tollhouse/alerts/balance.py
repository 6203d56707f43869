"""Credit balance alerts: ``credit_low``, ``credit_depleted``, ``credit_recovered``.

The credits package decides when an account's balance crosses a mark
(``credits.alerting``) and hands the ``Crossing`` to ``AlertService.credit_crossed`` in
its own transaction; ``record`` here stores the event under the crossing's unique dedup
key (``credit:<account>:<n>``) with one outbox delivery per default channel, like a
budget alert. The dispatcher sends it through the same channels.

The webhook payload keeps the style of budget alerts — LiteLLM's names where they mean
the same thing (``customer_id``, ``team_id``, ``token``, ``team_alias``, ``key_alias``,
``event``, ``event_group``, ``event_message``), ours beside them — and money as exact
JSON numbers.
"""

from __future__ import annotations

import html
import uuid
from datetime import datetime
from string import Template
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection

from tollhouse.alerts.events import enqueue, insert_event, json_safe
from tollhouse.credits.alerting import Crossing
from tollhouse.money import format_usd

EVENTS = ("credit_low", "credit_depleted", "credit_recovered")


def _who(crossing: Crossing) -> str:
    name = f" '{crossing.owner_name}'" if crossing.owner_name else ""
    return f"{crossing.owner_type}{name} ({crossing.owner_id})"


def message(crossing: Crossing) -> str:
    balance = f"{format_usd(crossing.balance)} USD"
    where = f"Credit account {crossing.account_id} of {_who(crossing)}"
    if crossing.event == "credit_depleted":
        overdraft = crossing.overdraft_limit
        after = (
            f"; requests continue on the overdraft of {format_usd(overdraft)} USD"
            if overdraft > 0
            else "; requests are refused until it is topped up"
        )
        return f"{where} is out of credit: balance {balance}{after}."
    if crossing.event == "credit_low":
        return (
            f"{where} is low on credit: balance {balance}, below the low-balance mark of "
            f"{format_usd(crossing.threshold)} USD."
        )
    mark = "0" if crossing.state == "low" else format_usd(crossing.threshold)
    still = " (still below its low-balance mark)" if crossing.state == "low" else ""
    return f"{where} has credit again: balance {balance}, above {mark} USD{still}."


def payload(crossing: Crossing, event_id: str, now: datetime) -> dict[str, Any]:
    kind, owner, name = crossing.owner_type, crossing.owner_id, crossing.owner_name
    return {
        # LiteLLM's names (WebhookEvent) where they mean the same thing
        "token": owner if kind == "key" else None,
        "customer_id": owner if kind == "customer" else None,
        "team_id": owner if kind == "team" else None,
        "key_alias": name if kind == "key" else None,
        "team_alias": name if kind == "team" else None,
        "event": crossing.event,
        "event_group": kind,
        "event_message": message(crossing),
        # Ours
        "event_id": event_id,
        "level": crossing.level,
        "account_id": crossing.account_id,
        "scope": {"kind": kind, "id": owner, "name": name},
        "state": crossing.state,
        "previous_state": crossing.previous,
        "threshold": crossing.threshold,
        "balance": crossing.balance,
        "reserved": crossing.reserved,
        "available": crossing.available,
        "low_balance": crossing.low_balance,
        "overdraft_limit": crossing.overdraft_limit,
        "crossing": crossing.crossing,
        "created_at": now.isoformat(),
    }


async def record(conn: AsyncConnection, crossing: Crossing, now: datetime) -> str | None:
    """Write the event and its deliveries (default channels); ``None`` when its dedup key
    was written before."""
    event_id = str(uuid.uuid4())
    stored = await insert_event(
        conn,
        id=event_id,
        dedup_key=crossing.dedup_key,
        source="tollhouse",
        event=crossing.event,
        level=crossing.level,
        scope_kind=crossing.owner_type,
        scope_id=crossing.owner_id,
        scope_name=crossing.owner_name,
        threshold=crossing.threshold,
        payload=json_safe(payload(crossing, event_id, now)),
        created_at=now,
    )
    if not stored:
        return None
    await enqueue(conn, event_id, None, now)
    return event_id


# --- what email and Slack say ---------------------------------------------------------

_SUBJECT = {
    "credit_low": Template("[Tollhouse] Credit low: $who"),
    "credit_depleted": Template("[Tollhouse] CRITICAL: credit used up: $who"),
    "credit_recovered": Template("[Tollhouse] Credit recovered: $who"),
}

_TEXT = Template(
    """$event_message

Balance:    $balance USD (settled)
Available:  $available USD ($reserved USD held by requests in flight)
Mark:       $threshold USD
Low mark:   $low_balance
Overdraft:  $overdraft_limit USD
Account:    $account_id
Owner:      $who
Event id:   $event_id
"""
)

_HTML = Template(
    """<!doctype html>
<html><body style="font-family: sans-serif">
<h2 style="color: $color">$headline</h2>
<p>$event_message</p>
<table cellpadding="4">
<tr><th align="left">Balance</th><td>$balance USD (settled)</td></tr>
<tr><th align="left">Available</th><td>$available USD ($reserved USD held)</td></tr>
<tr><th align="left">Mark</th><td>$threshold USD</td></tr>
<tr><th align="left">Low mark</th><td>$low_balance</td></tr>
<tr><th align="left">Overdraft</th><td>$overdraft_limit USD</td></tr>
<tr><th align="left">Account</th><td>$account_id</td></tr>
<tr><th align="left">Event id</th><td>$event_id</td></tr>
</table>
</body></html>
"""
)

_HEADLINE = {
    "credit_low": "Credit low",
    "credit_depleted": "Credit used up",
    "credit_recovered": "Credit recovered",
}
_COLOR = {"critical": "#b00020", "warning": "#b26a00"}


def _text(value: Any) -> str:
    return "unknown" if value is None or value == "" else str(value)


def variables(stored: dict[str, Any]) -> dict[str, str]:
    """Every template variable from a stored payload; ``unknown`` for what it lacks."""
    scope = stored.get("scope")
    scope = scope if isinstance(scope, dict) else {}
    name = f" '{scope['name']}'" if scope.get("name") else ""
    event = str(stored.get("event"))
    low = stored.get("low_balance")
    return {
        "who": f"{_text(scope.get('kind'))}{name}",
        "headline": _HEADLINE.get(event, event),
        "event_message": _text(stored.get("event_message")),
        "balance": _text(stored.get("balance")),
        "available": _text(stored.get("available")),
        "reserved": _text(stored.get("reserved")),
        "threshold": _text(stored.get("threshold")),
        "low_balance": f"{low} USD" if low is not None else "none set",
        "overdraft_limit": _text(stored.get("overdraft_limit")),
        "account_id": _text(stored.get("account_id")),
        "event_id": _text(stored.get("event_id")),
        "color": _COLOR.get(str(stored.get("level")), "#1b5e20"),
    }


def render_email(stored: dict[str, Any]) -> tuple[str, str, str]:
    """``(subject, text, html)`` of a credit event."""
    values = variables(stored)
    subject = _SUBJECT.get(str(stored.get("event")), _SUBJECT["credit_low"]).substitute(values)
    escaped = {k: html.escape(v) for k, v in values.items()}
    return subject, _TEXT.substitute(values), _HTML.substitute(escaped)


def render_slack(stored: dict[str, Any]) -> dict[str, Any]:
    v = variables(stored)
    icon = {"critical": ":red_circle:", "warning": ":large_orange_circle:"}.get(
        str(stored.get("level")), ":large_green_circle:"
    )
    fields = [
        ("Balance", f"{v['balance']} USD"),
        ("Available", f"{v['available']} USD"),
        ("Mark", f"{v['threshold']} USD"),
        ("Overdraft", f"{v['overdraft_limit']} USD"),
    ]
    return {
        "text": f"{icon} {v['headline']}: {v['event_message']}",
        "blocks": [
            {
                "type": "header",
                "text": {"type": "plain_text", "text": f"{v['headline']}: {v['who']}"[:150]},
            },
            {"type": "section", "text": {"type": "mrkdwn", "text": v["event_message"]}},
            {
                "type": "section",
                "fields": [{"type": "mrkdwn", "text": f"*{k}*\n{val}"} for k, val in fields],
            },
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": f"account `{v['account_id']}` · event `{v['event_id']}`",
                    }
                ],
            },
        ],
    }
