"""How ``tollhouse customers|teams|keys`` print an entity as text (``--json`` prints
the admin API's shape instead)."""

from __future__ import annotations

from collections.abc import Sequence

from tollhouse.cli.tables import render_table
from tollhouse.governance.rows import (
    BudgetRow,
    CustomerView,
    KeyView,
    RateLimitRow,
    TeamView,
)
from tollhouse.money import format_usd
from tollhouse.web.responses import rfc3339


def budget_text(budget: BudgetRow | None) -> str:
    if budget is None:
        return "-"
    text = f"{format_usd(budget.max_limit)} USD / {budget.reset_duration}"
    if budget.calendar_aligned:
        text += f" (calendar, {budget.timezone})"
    if budget.hard_limit_ratio != 1:
        text += f" x{format_usd(budget.hard_limit_ratio)}"
    return text


def rate_text(limit: RateLimitRow | None) -> str:
    if limit is None:
        return "-"
    parts = []
    if limit.request_max_limit is not None:
        parts.append(f"{limit.request_max_limit} req/{limit.request_reset_duration}")
    if limit.token_max_limit is not None:
        parts.append(f"{limit.token_max_limit} tok/{limit.token_reset_duration}")
    return ", ".join(parts) or "-"


def _details(rows: Sequence[tuple[str, object]]) -> str:
    return render_table(["field", "value"], [[name, "-" if v is None else v] for name, v in rows])


def customer_details(view: CustomerView) -> str:
    c = view.customer
    return _details(
        [
            ("id", c.id),
            ("name", c.name),
            ("budget", budget_text(view.budget)),
            ("rate limit", rate_text(view.rate_limit)),
            ("teams", ", ".join(t.name for t in view.teams) or "-"),
            ("created", rfc3339(c.created_at)),
            ("updated", rfc3339(c.updated_at)),
        ]
    )


def team_details(view: TeamView) -> str:
    t = view.team
    customer = f"{view.customer.name} ({view.customer.id})" if view.customer else None
    return _details(
        [
            ("id", t.id),
            ("name", t.name),
            ("customer", customer),
            ("budget", budget_text(view.budget)),
            ("rate limit", rate_text(view.rate_limit)),
            ("created", rfc3339(t.created_at)),
            ("updated", rfc3339(t.updated_at)),
        ]
    )


def owner(view: KeyView) -> str | None:
    if view.team is not None:
        return f"team {view.team.name} ({view.team.id})"
    if view.customer is not None:
        return f"customer {view.customer.name} ({view.customer.id})"
    return None


def _list_text(values: tuple[str, ...] | None) -> str:
    return "all" if values is None else (", ".join(values) or "none")


def key_details(view: KeyView) -> str:
    k = view.key
    return _details(
        [
            ("id", k.id),
            ("name", k.name),
            ("key", k.key_hint),
            ("description", k.description),
            ("active", "yes" if k.is_active else "no"),
            ("expires", rfc3339(k.expires_at)),
            ("belongs to", owner(view)),
            ("models", _list_text(k.allowed_models)),
            ("providers", _list_text(k.allowed_providers)),
            ("max parallel", k.max_parallel_requests),
            ("budget", budget_text(view.budget)),
            ("rate limit", rate_text(view.rate_limit)),
            ("created", rfc3339(k.created_at)),
            ("updated", rfc3339(k.updated_at)),
        ]
    )


# --- customers ------------------------------------------------------------------------
