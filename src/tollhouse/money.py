"""Exact money: ``Decimal`` in code, integer nano-dollars where a fixed unit is needed.

A request's cost is computed exactly (tokens × price per 1M tokens) and then rounded
**up** to the nano-dollar, once. That rounded amount is the one the ledger, counters and
credits all carry, so they reconcile to the unit; rounding up means a request is never
charged less than it cost. Binary floats never touch money.
"""

from __future__ import annotations

from decimal import MAX_EMAX, MIN_EMIN, ROUND_CEILING, Context, Decimal

NANO = Decimal("0.000000001")
NANOS_PER_USD = 1_000_000_000
TOKENS_PER_PRICE_UNIT = 1_000_000
ZERO = Decimal(0)

# Enough digits for 2^63 nano-dollars times a million tokens without silent rounding.
_CTX = Context(prec=60)


def ceil_to_nano(amount: Decimal) -> Decimal:
    """Round ``amount`` up to a whole nano-dollar."""
    return amount.quantize(NANO, rounding=ROUND_CEILING, context=_CTX)


def to_nanos(amount: Decimal) -> int:
    """Exact conversion of a nano-quantized amount to integer nano-dollars.

    >>> to_nanos(Decimal("0.000001"))
    1000
    """
    nanos = _CTX.multiply(amount, NANOS_PER_USD)
    if nanos != nanos.to_integral_value():
        raise ValueError(f"{amount} is not a whole number of nano-dollars")
    return int(nanos)


def from_nanos(nanos: int) -> Decimal:
    """Integer nano-dollars back to a ``Decimal`` of USD, exactly."""
    return _CTX.divide(Decimal(nanos), NANOS_PER_USD).quantize(NANO, context=_CTX)


def token_cost(
    *,
    prompt_tokens: int,
    completion_tokens: int,
    cached_tokens: int,
    input_price: Decimal,
    output_price: Decimal,
    cached_input_price: Decimal | None,
    cache_write_tokens: int = 0,
    cache_write_price: Decimal | None = None,
) -> Decimal:
    """Cost in USD of one request, rounded up to the nano-dollar.

    ``prompt_tokens`` includes ``cached_tokens`` (cache reads) and ``cache_write_tokens``
    (OpenAI's convention; Anthropic's counts are normalised to it). Cache reads are billed
    at ``cached_input_price`` and cache writes at ``cache_write_price`` where the model
    has them, else at the input price. Prices are USD per 1M tokens.
    """
    prompt = max(prompt_tokens, 0)
    cached = min(max(cached_tokens, 0), prompt)
    written = min(max(cache_write_tokens, 0), prompt - cached)
    uncached = prompt - cached - written
    read_price = input_price if cached_input_price is None else cached_input_price
    write_price = input_price if cache_write_price is None else cache_write_price
    total = _CTX.add(
        _CTX.add(_CTX.multiply(uncached, input_price), _CTX.multiply(cached, read_price)),
        _CTX.add(
            _CTX.multiply(written, write_price),
            _CTX.multiply(max(completion_tokens, 0), output_price),
        ),
    )
    return ceil_to_nano(_CTX.divide(total, TOKENS_PER_PRICE_UNIT))


def format_usd(amount: Decimal) -> str:
    """``Decimal`` as a plain string without exponent and without trailing zeros."""
    # normalize() rounds to its context's precision: give it every digit, so that only
    # trailing zeros go (a fixed precision rounded amounts with more significant digits).
    # And every exponent: the default context's Emax would raise Overflow on 1e1000000.
    exact = Context(prec=max(len(amount.as_tuple().digits), 1), Emax=MAX_EMAX, Emin=MIN_EMIN)
    text = format(amount.normalize(context=exact), "f")
    return text if text != "-0" else "0"
