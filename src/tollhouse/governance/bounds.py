"""Bounds on admin input, checked before anything is computed from it.

- **Numbers** come from ``json.loads(parse_float=Decimal)`` and may be anything JSON can
  spell (``-1e1000000``, a million digits). Their size is checked on the digits and the
  exponent before any arithmetic: ``normalize()`` or formatting of such a value raises
  ``decimal.Overflow`` or writes a megabyte.
- **Money** that the meter counts in 64-bit nano-dollars (Redis ``HINCRBY``, SQLite
  ``BIGINT``): a budget's cap ``max_limit × hard_limit_ratio`` is at most
  ``MAX_BUDGET_USD``, 10¹⁸ nano-dollars — 9 × below 2⁶³, so that spend which runs past
  its cap (requests settle at their actual cost) still cannot overflow a counter.
- **Lists** are counted before their items are validated: Pydantic validates every item
  (and builds an error for each bad one) before it looks at ``max_length``.
- **Messages** quote at most a short prefix of what was sent.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from pydantic import BeforeValidator

from tollhouse.errors import ValidationFailed
from tollhouse.money import format_usd

MAX_DECIMAL_PLACES = 9
MAX_DIGITS = 40  # significant digits of any number in an admin body
MAX_MAGNITUDE = 40  # |x| < 10**40 (and 0 or ≥ 10**-40)
MAX_BUDGET_USD = Decimal(1_000_000_000)
MAX_LIST = 1000  # allowed_models, allowed_providers
MAX_CHANNELS = 100  # alert_channels, email recipients
MAX_TEXT = 64  # reset_duration, timezone: longer is wrong, whatever it says
PREVIEW = 64
MAX_MESSAGE = 1000


def preview(value: object) -> str:
    """``value`` for a message: its first ``PREVIEW`` characters."""
    text = value if isinstance(value, str) else str(value)
    return text[:PREVIEW] + ("…" if len(text) > PREVIEW else "")


def short(message: str) -> str:
    return message if len(message) <= MAX_MESSAGE else message[:MAX_MESSAGE] + "…"


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float | Decimal):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def number(value: Any) -> Any:
    """JSON numbers only: an int or a ``Decimal`` (``parse_float``); never a bool; of a
    size any later arithmetic can take."""
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise ValueError(f"must be a number, got {json_type(value)}")
    if isinstance(value, int) and value.bit_length() > 4 * MAX_DIGITS:
        raise ValueError(f"is out of range (more than {MAX_DIGITS} digits)")
    amount = Decimal(value)
    if not amount.is_finite():
        raise ValueError("must be a finite number")
    if amount and not -MAX_MAGNITUDE <= amount.adjusted() < MAX_MAGNITUDE:
        raise ValueError(
            f"is out of range (at most {MAX_MAGNITUDE} digits either side of the point)"
        )
    if len(amount.as_tuple().digits) > MAX_DIGITS:
        raise ValueError(f"has more than {MAX_DIGITS} significant digits")
    return amount


def whole(value: Any) -> Any:
    """An integer written as a JSON number with a fraction or an exponent (``5.0``,
    ``1e3``) is that integer, as JSON Schema reads it; ``5.5`` stays a number, for the
    field's strict ``int`` to refuse."""
    if isinstance(value, Decimal):
        amount = number(value)
        if amount == amount.to_integral_value():
            return int(amount)
    return value


def places(value: Decimal) -> Decimal:
    """At most 9 decimal places once trailing zeros go (``1.50`` has 1), counted on the
    digits themselves: ``normalize()`` would round past 28 digits first."""
    _, digits, exponent = value.as_tuple()
    text = "".join(map(str, digits))
    if not isinstance(exponent, int) or not text.strip("0"):
        return value  # zero, however written (infinities are refused in number())
    decimals = -(exponent + len(text) - len(text.rstrip("0")))
    if decimals > MAX_DECIMAL_PLACES:
        raise ValueError(f"has more than {MAX_DECIMAL_PLACES} decimal places")
    return value


def usd(value: Decimal) -> Decimal:
    if value < 0:
        raise ValueError(f"cannot be negative ({preview(format_usd(value))})")
    if value > MAX_BUDGET_USD:
        raise ValueError(f"is too large: at most {format_usd(MAX_BUDGET_USD)} USD per budget")
    return places(value)


def ratio(value: Decimal) -> Decimal:
    if not 1 <= value <= 100:
        raise ValueError(f"must be from 1 to 100 ({preview(format_usd(value))})")
    return places(value)


def threshold(value: Decimal) -> Decimal:
    if not 0 < value <= 10:
        raise ValueError(f"must be above 0 and at most 10 ({preview(format_usd(value))})")
    return places(value)


def at_most(count: int) -> BeforeValidator:
    """A list's length, checked before its items are."""

    def check(value: Any) -> Any:
        if isinstance(value, list) and len(value) > count:
            raise ValueError(f"has too many items ({len(value)}; at most {count})")
        return value

    return BeforeValidator(check)


def text_at_most(value: Any) -> Any:
    if isinstance(value, str) and len(value) > MAX_TEXT:
        raise ValueError(f"is too long ({len(value)} characters, at most {MAX_TEXT})")
    return value


def check_budget_cap(max_limit: Decimal, hard_limit_ratio: Decimal, field: str) -> None:
    """The cap the meter counts to must fit its 64-bit nano-dollar counters."""
    if max_limit * hard_limit_ratio > MAX_BUDGET_USD:
        raise ValidationFailed(
            f"budget.{field}: max_limit × hard_limit_ratio is "
            f"{preview(format_usd(max_limit * hard_limit_ratio))} USD; at most "
            f"{format_usd(MAX_BUDGET_USD)} USD per budget",
            param=f"budget.{field}",
        )


def no_nul(data: Any) -> None:
    """NUL cannot be stored in Postgres text; refuse it in any string, keys included.

    Depth-first with one iterator per open container: memory follows the nesting depth,
    not the body (a list of paths, one per item, was ~30 × the body)."""
    if isinstance(data, str):
        if "\x00" in data:
            raise ValidationFailed("body contains a NUL character", param="")
        return
    stack: list[tuple[Any, Any]] = [(None, _children(data))]
    while stack:
        step = next(stack[-1][1], None)
        if step is None:
            stack.pop()
            continue
        key, value = step
        if isinstance(key, str) and "\x00" in key:
            raise _nul_at([k for k, _ in stack[1:]], "a key")
        if isinstance(value, str):
            if "\x00" in value:
                raise _nul_at([*(k for k, _ in stack[1:]), key], "")
        elif isinstance(value, dict | list):
            stack.append((key, _children(value)))


def _children(value: Any) -> Any:
    if isinstance(value, dict):
        return iter(value.items())
    if isinstance(value, list):
        return enumerate(value)
    return iter(())


def _nul_at(path: list[Any], what: str) -> ValidationFailed:
    where = ""
    for part in path:
        where += f"[{part}]" if isinstance(part, int) else (f".{part}" if where else str(part))
    where = preview(where)
    subject = f"{where or 'body'}" + (f" has {what} that" if what else "")
    return ValidationFailed(f"{subject} contains a NUL character", param=where)
