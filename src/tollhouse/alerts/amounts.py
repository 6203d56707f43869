"""Amounts from other meters (``POST /api/webhooks/budget``): bounded, then rounded for
the event columns.

LiteLLM sends floats such as ``0.12345678901``. The stored payload keeps the sender's
digits exactly; the ``spend`` and ``max_limit`` columns (integer nano-dollars on SQLite,
``NUMERIC(38, 9)`` on Postgres) take the amount rounded **half-even** to the
nano-dollar, the same on both stores (Postgres alone would round half away from zero).
An amount those columns cannot hold — beyond ±(2⁶³ − 1) nano-dollars — or whose
exponent no arithmetic should meet is refused as a 422 naming the field.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Context, Decimal
from typing import Annotated

from pydantic import AfterValidator, WithJsonSchema

from tollhouse.money import NANO, format_usd, from_nanos

LIMIT = from_nanos(2**63 - 1)  # 9223372036.854775807 USD
_SMALLEST = -40  # adjusted exponent: 1e-40 is far below a nano-dollar, and rounds to 0
_CTX = Context(prec=60)


def _in_range(value: Decimal) -> Decimal:
    if not value.is_finite():
        raise ValueError("must be a finite number")
    if value.copy_abs() > LIMIT:  # copy_abs: abs() rounds in the context, and overflows
        raise ValueError(f"is out of range (at most {format_usd(LIMIT)} USD either way)")
    if value and value.adjusted() < _SMALLEST:
        raise ValueError(f"is out of range (below 1e{_SMALLEST})")
    return value


InboundUsd = Annotated[
    Decimal,
    AfterValidator(_in_range),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number"},
                {"type": "string"},
            ],
            "description": "USD: a number (or a string of one), kept digit for digit; at most "
            f"{format_usd(LIMIT)} either way, and 0 or at least 1e{_SMALLEST} in size (else 422)",
        }
    ),
]


def column_usd(value: Decimal) -> Decimal:
    """``value`` (within ``LIMIT``) rounded half-even to the nano-dollar, for a column."""
    return value.quantize(NANO, rounding=ROUND_HALF_EVEN, context=_CTX)
