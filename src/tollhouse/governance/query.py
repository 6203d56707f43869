"""Query parameters of the admin API (governance, ledger, alerts), checked the same way.

Every check is a 400 naming the parameter: a count that is not plain ASCII digits
(``"²".isdigit()`` is true but ``int("²")`` fails; ``int("１０")`` is 10 but not what a
client meant) or out of its bounds. A NUL anywhere in a query never gets here: the edge
guard (``web.guard``) refuses it, naming the parameter, before any route runs.
"""

from __future__ import annotations

from starlette.datastructures import QueryParams

from tollhouse.errors import ValidationFailed

# Enough for any bound we use; a longer string of digits is refused before int() reads it.
_MAX_DIGITS = 12


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
