"""Bounds on governance amounts, checked before anything is computed from them.

- **Money** that the meter counts in 64-bit nano-dollars (Redis ``HINCRBY``, SQLite
  ``BIGINT``): a budget's cap ``max_limit × hard_limit_ratio`` is at most
  ``MAX_BUDGET_USD``, 10¹⁸ nano-dollars — 9 × below 2⁶³, so that spend which runs past
  its cap (requests settle at their actual cost) still cannot overflow a counter.
- **Places**: amounts and ratios have at most 9 decimal places (a nano-dollar).

The bounds every admin body shares (number sizes, list lengths, NUL, message length)
are the toolkit's (``web/validation.py``).
"""

from __future__ import annotations

from decimal import Decimal

from tollhouse.errors import ValidationFailed
from tollhouse.money import format_usd
from tollhouse.web.validation import preview

MAX_DECIMAL_PLACES = 9
MAX_BUDGET_USD = Decimal(1_000_000_000)
MAX_LIST = 1000  # allowed_models, allowed_providers
MAX_CHANNELS = 100  # alert_channels, email recipients


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


def check_budget_cap(max_limit: Decimal, hard_limit_ratio: Decimal, field: str) -> None:
    """The cap the meter counts to must fit its 64-bit nano-dollar counters."""
    if max_limit * hard_limit_ratio > MAX_BUDGET_USD:
        raise ValidationFailed(
            f"budget.{field}: max_limit × hard_limit_ratio is "
            f"{preview(format_usd(max_limit * hard_limit_ratio))} USD; at most "
            f"{format_usd(MAX_BUDGET_USD)} USD per budget",
            param=f"budget.{field}",
        )
