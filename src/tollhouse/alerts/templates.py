"""What an alert says: email (text and HTML, warning and critical) and Slack blocks.

Templates use ``string.Template.substitute`` with every variable always given: a value
the event lacks (an inbound LiteLLM event without ``max_budget``, an odd ``scope``)
reads ``unknown``, so any stored event renders — a delivery that cannot render would
never be sent. Values are escaped in the HTML body. The figures come from the event
payload, exact as stored.
"""

from __future__ import annotations

import html
from string import Template
from typing import Any

from tollhouse.alerts import balance

_SUBJECT = {
    "warning": Template("[Tollhouse] $scope_label reached $percentage % of its budget"),
    "critical": Template("[Tollhouse] CRITICAL: $scope_label reached its budget"),
}

_TEXT = Template(
    """$headline

Spend:      $spend USD
Budget:     $max_budget USD ($percentage % threshold)
Window:     $window_start to $window_end
Runs out:   $projected
Scope:      $scope_kind $scope_name ($scope_id)
Event id:   $event_id

$event_message
"""
)

_HTML = Template(
    """<!doctype html>
<html><body style="font-family: sans-serif">
<h2 style="color: $color">$headline</h2>
<table cellpadding="4">
<tr><th align="left">Spend</th><td>$spend USD</td></tr>
<tr><th align="left">Budget</th><td>$max_budget USD ($percentage % threshold)</td></tr>
<tr><th align="left">Window</th><td>$window_start to $window_end</td></tr>
<tr><th align="left">Runs out</th><td>$projected</td></tr>
<tr><th align="left">Scope</th><td>$scope_kind $scope_name ($scope_id)</td></tr>
<tr><th align="left">Event id</th><td>$event_id</td></tr>
</table>
<p>$event_message</p>
</body></html>
"""
)

UNKNOWN = "unknown"


def _text(value: Any) -> str:
    return UNKNOWN if value is None or value == "" else str(value)


def variables(payload: dict[str, Any]) -> dict[str, str]:
    """Every template variable, from the payload; ``unknown`` for what it lacks."""
    scope = payload.get("scope")
    scope = scope if isinstance(scope, dict) else {}
    level = str(payload.get("level"))
    label = f"{_text(scope.get('kind'))} '{_text(scope.get('name'))}'"
    percentage = _text(payload.get("percentage"))
    headline = (
        f"{label} reached its budget"
        if level == "critical"
        else f"{label} reached {percentage} % of its budget"
    )
    return {
        "scope_label": label,
        "scope_kind": _text(scope.get("kind")),
        "scope_name": _text(scope.get("name")),
        "scope_id": _text(scope.get("id")),
        "headline": headline,
        "spend": _text(payload.get("spend")),
        "max_budget": _text(payload.get("max_budget")),
        "percentage": percentage,
        "window_start": _text(payload.get("window_start")),
        "window_end": _text(payload.get("window_end")),
        "projected": str(payload.get("projected_exceeded_date") or "not before the window resets"),
        "event_id": _text(payload.get("event_id")),
        "event_message": _text(payload.get("event_message")),
        "color": "#b00020" if level == "critical" else "#b26a00",
    }


def _credit(payload: dict[str, Any]) -> bool:
    return str(payload.get("event")) in balance.EVENTS


def render_email(payload: dict[str, Any]) -> tuple[str, str, str]:
    """``(subject, text, html)``."""
    if _credit(payload):
        return balance.render_email(payload)
    values = variables(payload)
    level = "critical" if payload.get("level") == "critical" else "warning"
    subject = _SUBJECT[level].substitute(values)
    text = _TEXT.substitute(values)
    escaped = {k: html.escape(v) for k, v in values.items()}
    return subject, text, _HTML.substitute(escaped)


def render_slack(payload: dict[str, Any]) -> dict[str, Any]:
    """An incoming-webhook message: a fallback ``text`` and formatted blocks."""
    if _credit(payload):
        return balance.render_slack(payload)
    v = variables(payload)
    icon = ":red_circle:" if payload.get("level") == "critical" else ":large_orange_circle:"
    fields = [
        ("Spend", f"{v['spend']} USD"),
        ("Budget", f"{v['max_budget']} USD ({v['percentage']} %)"),
        ("Window", f"{v['window_start']} → {v['window_end']}"),
        ("Runs out", v["projected"]),
    ]
    return {
        "text": f"{icon} {v['headline']}",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": v["headline"][:150]}},
            {
                "type": "section",
                "fields": [{"type": "mrkdwn", "text": f"*{k}*\n{val}"} for k, val in fields],
            },
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": f"{v['scope_kind']} `{v['scope_id']}` · event `{v['event_id']}`",
                    }
                ],
            },
        ],
    }
