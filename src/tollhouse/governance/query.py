"""Query parameters of the admin API (governance, ledger, alerts), checked the same way.

Every check is a 400 naming the parameter: a NUL character anywhere (Postgres text
cannot hold one, so it would fail in the database as a 500), a count that is not plain
ASCII digits (``"²".isdigit()`` is true but ``int("²")`` fails; ``int("１０")`` is 10
but not what a client meant) or out of its bounds.
"""

from __future__ import annotations

from starlette.datastructures import QueryParams
from starlette.requests import Request

from tollhouse.errors import ValidationFailed

# Enough for any bound we use; a longer string of digits is refused before int() reads it.
_MAX_DIGITS = 12
_PREVIEW = 64


def preview(value: str) -> str:
    """``value`` quoted for an error message, cut to a short prefix (never the whole)."""
    return repr(value[:_PREVIEW]) + ("…" if len(value) > _PREVIEW else "")


def checked_query(request: Request) -> QueryParams:
    """The request's query parameters, refused with a 400 if any holds a NUL."""
    params = request.query_params
    for name, value in params.multi_items():
        if "\x00" in name:
            raise ValidationFailed("a query parameter name contains a NUL character", param="query")
        if "\x00" in value:
            where = name[:_PREVIEW]
            raise ValidationFailed(f"{where} contains a NUL character", param=where)
    return params


def ascii_digits(value: str) -> bool:
    return value.isascii() and value.isdigit() and len(value) <= _MAX_DIGITS


def count(params: QueryParams, name: str, *, default: int, low: int, high: int) -> int:
    """A whole number from ``low`` to ``high``; ``default`` when absent."""
    value = params.get(name)
    if value is None:
        return default
    if not ascii_digits(value) or not low <= int(value) <= high:
        raise ValidationFailed(f"{name} must be an integer from {low} to {high}", param=name)
    return int(value)
