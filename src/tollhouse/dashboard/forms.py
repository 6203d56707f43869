"""Posted forms to the admin API's bodies: every page writes through the same models
and services as ``/api``, so a form refuses exactly what the API refuses, naming the
field (shown next to it)."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from tollhouse.errors import ValidationFailed

Form = dict[str, str]


def text(form: Form, name: str) -> str | None:
    """A field's text, trimmed; ``None`` when blank or absent."""
    value = form.get(name, "").strip()
    return value or None


def amount(form: Form, name: str, param: str) -> Decimal | None:
    value = text(form, name)
    if value is None:
        return None
    try:
        parsed = Decimal(value.replace(",", "").removeprefix("$"))
    except InvalidOperation:
        raise ValidationFailed(
            f"{param} must be an amount of USD, got {value!r}", param=param
        ) from None
    if not parsed.is_finite():
        raise ValidationFailed(f"{param} must be an amount of USD, got {value!r}", param=param)
    return parsed


def integer(form: Form, name: str, param: str) -> int | None:
    value = text(form, name)
    if value is None:
        return None
    if not value.isascii() or not value.isdigit():
        raise ValidationFailed(f"{param} must be a whole number, got {value!r}", param=param)
    return int(value)


def words(form: Form, name: str) -> list[str] | None:
    """A comma- or space-separated list; ``None`` when blank (no list: anything goes)."""
    value = text(form, name)
    if value is None:
        return None
    return [part for part in value.replace(",", " ").split() if part]


def checked(form: Form, name: str) -> bool:
    return form.get(name) in ("on", "true", "1")


def limits(form: Form, *, creating: bool) -> dict[str, Any]:
    """The ``budget`` and ``rate_limit`` of a body, from the shared limits fieldset. A
    blank budget amount means no budget (an update removes the one there is)."""
    body: dict[str, Any] = {}
    limit = amount(form, "budget_max_limit", "budget.max_limit")
    if limit is not None:
        body["budget"] = {
            "max_limit": limit,
            "reset_duration": text(form, "budget_reset_duration"),
        }
    elif not creating:
        body["budget"] = None
    rate = {
        "request_max_limit": integer(form, "request_max_limit", "rate_limit.request_max_limit"),
        "request_reset_duration": text(form, "request_reset_duration"),
        "token_max_limit": integer(form, "token_max_limit", "rate_limit.token_max_limit"),
        "token_reset_duration": text(form, "token_reset_duration"),
    }
    if rate["request_max_limit"] is None:
        rate["request_reset_duration"] = None
    if rate["token_max_limit"] is None:
        rate["token_reset_duration"] = None
    if any(value is not None for value in rate.values()):
        body["rate_limit"] = rate
    elif not creating:
        body["rate_limit"] = None
    return body


def limits_form(budget: Any, rate: Any) -> Form:
    """The limits fieldset filled from an entity's ``budget`` and ``rate_limit`` reads."""
    form = {
        "budget_max_limit": f"{budget.max_limit:f}" if budget else "",
        "budget_reset_duration": budget.reset_duration if budget else "",
    }
    for kind in ("request", "token"):
        limit = getattr(rate, f"{kind}_max_limit", None) if rate else None
        form[f"{kind}_max_limit"] = "" if limit is None else str(limit)
        duration = getattr(rate, f"{kind}_reset_duration", None) if rate else None
        form[f"{kind}_reset_duration"] = duration or ""
    return form
