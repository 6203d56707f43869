"""Exact money: costs against a ``Fraction`` reference, nano-dollar storage, formatting."""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from tollhouse.money import (
    NANO,
    ceil_to_nano,
    format_usd,
    from_nanos,
    to_nanos,
    token_cost,
)

tokens = st.integers(min_value=0, max_value=10**9)
# USD per 1M tokens: 0 to 1,000 with up to 6 decimal places, as catalogs write them.
prices = st.decimals(min_value=0, max_value=1000, places=6, allow_nan=False, allow_infinity=False)
optional_prices = st.none() | prices
nanos = st.integers(min_value=-(2**63), max_value=2**63 - 1)


def reference_cost(
    prompt: int,
    completion: int,
    cached: int,
    written: int,
    input_price: Decimal,
    output_price: Decimal,
    cached_price: Decimal | None,
    write_price: Decimal | None,
) -> Decimal:
    """The same rule in exact rationals, rounded up to 1e-9 once."""
    prompt = max(prompt, 0)
    cached = min(max(cached, 0), prompt)
    written = min(max(written, 0), prompt - cached)
    uncached = prompt - cached - written
    read = input_price if cached_price is None else cached_price
    write = input_price if write_price is None else write_price
    total = (
        uncached * Fraction(input_price)
        + cached * Fraction(read)
        + written * Fraction(write)
        + max(completion, 0) * Fraction(output_price)
    ) / 1_000_000
    return Decimal(math.ceil(total * 10**9)) / Decimal(10**9)


@given(tokens, tokens, tokens, tokens, prices, prices, optional_prices, optional_prices)
def test_token_cost_matches_exact_reference(
    prompt, completion, cached, written, inp, out, cached_price, write_price
):
    cost = token_cost(
        prompt_tokens=prompt,
        completion_tokens=completion,
        cached_tokens=cached,
        input_price=inp,
        output_price=out,
        cached_input_price=cached_price,
        cache_write_tokens=written,
        cache_write_price=write_price,
    )
    expected = reference_cost(
        prompt, completion, cached, written, inp, out, cached_price, write_price
    )
    assert cost == expected
    assert cost >= 0
    assert cost == cost.quantize(NANO)  # whole nano-dollars, nothing finer


@given(
    st.integers(-(10**6), 10**9),
    st.integers(-(10**6), 10**9),
    st.integers(-(10**6), 10**9),
    prices,
    prices,
    optional_prices,
)
def test_token_cost_is_never_negative(prompt, completion, cached, inp, out, cached_price):
    cost = token_cost(
        prompt_tokens=prompt,
        completion_tokens=completion,
        cached_tokens=cached,
        input_price=inp,
        output_price=out,
        cached_input_price=cached_price,
    )
    assert cost >= 0


@given(tokens, tokens, tokens, st.integers(0, 10**6), st.integers(0, 10**6), prices, prices)
def test_token_cost_is_monotone_in_prompt_and_completion_tokens(
    prompt, completion, cached, more_prompt, more_completion, inp, out
):
    def cost(p: int, c: int) -> Decimal:
        return token_cost(
            prompt_tokens=p,
            completion_tokens=c,
            cached_tokens=cached,
            input_price=inp,
            output_price=out,
            cached_input_price=None,
        )

    base = cost(prompt, completion)
    assert cost(prompt + more_prompt, completion) >= base
    assert cost(prompt, completion + more_completion) >= base
    assert cost(prompt + more_prompt, completion + more_completion) >= base


@given(tokens, tokens, prices, prices)
def test_charging_cached_tokens_never_costs_more_than_input_price(
    prompt, cached, inp, discount_pct
):
    discounted = min(inp, inp * discount_pct / 1000)
    common = dict(prompt_tokens=prompt, completion_tokens=0, input_price=inp, output_price=0)
    full = token_cost(cached_tokens=0, cached_input_price=None, **common)
    with_cache = token_cost(cached_tokens=cached, cached_input_price=discounted, **common)
    assert with_cache <= full


@pytest.mark.parametrize(
    ("prompt", "completion", "cached", "inp", "out", "cached_price", "expected"),
    [
        (1_000_000, 1_000_000, 0, "2.50", "10.00", "1.25", "12.5"),
        (4, 16, 0, "0.15", "0.60", "0.075", "0.0000102"),
        (1, 0, 0, "0.15", "0", None, "0.00000015"),
        # 1 token at 0.0001 USD/1M is 1e-10 USD: rounded up to one nano-dollar, never 0.
        (1, 0, 0, "0.0001", "0", None, "0.000000001"),
        (0, 0, 0, "5", "5", None, "0"),
        # Cached tokens are part of prompt tokens and billed at the cached price.
        (1000, 0, 400, "1.00", "0", "0.10", "0.00064"),
        # Cached tokens beyond the prompt cannot make anything cheaper than free.
        (100, 0, 10_000, "1.00", "0", "0.10", "0.00001"),
    ],
)
def test_token_cost_examples(prompt, completion, cached, inp, out, cached_price, expected):
    cost = token_cost(
        prompt_tokens=prompt,
        completion_tokens=completion,
        cached_tokens=cached,
        input_price=Decimal(inp),
        output_price=Decimal(out),
        cached_input_price=None if cached_price is None else Decimal(cached_price),
    )
    assert cost == Decimal(expected)


def test_token_cost_with_cache_writes():
    # Anthropic-style: 1,000 prompt tokens of which 200 read from cache, 300 written.
    cost = token_cost(
        prompt_tokens=1000,
        completion_tokens=10,
        cached_tokens=200,
        input_price=Decimal("3.00"),
        output_price=Decimal("15.00"),
        cached_input_price=Decimal("0.30"),
        cache_write_tokens=300,
        cache_write_price=Decimal("3.75"),
    )
    # (500 × 3 + 200 × 0.3 + 300 × 3.75 + 10 × 15) / 1e6
    assert cost == Decimal("0.002835")


# --- nano-dollars ---------------------------------------------------------------------


@given(nanos)
def test_nanos_round_trip(n):
    amount = from_nanos(n)
    assert to_nanos(amount) == n
    assert amount == Decimal(n) / Decimal(10**9)


@given(st.decimals(min_value=-(10**9), max_value=10**9, places=9, allow_nan=False))
def test_nano_quantized_decimal_round_trip(amount):
    assert from_nanos(to_nanos(amount)) == amount


def test_to_nanos_refuses_sub_nano_amounts():
    with pytest.raises(ValueError):
        to_nanos(Decimal("0.0000000001"))
    with pytest.raises(ValueError):
        to_nanos(Decimal("1.0000000005"))


def test_to_nanos_examples():
    assert to_nanos(Decimal("0.000001")) == 1000
    assert to_nanos(Decimal("1")) == 1_000_000_000
    assert to_nanos(Decimal("1E+11")) == 10**20
    assert to_nanos(Decimal("-0.000000001")) == -1


@given(st.decimals(min_value=-(10**6), max_value=10**6, places=15, allow_nan=False))
def test_ceil_to_nano_rounds_up_once(amount):
    rounded = ceil_to_nano(amount)
    assert rounded >= amount
    assert rounded - amount < NANO
    assert ceil_to_nano(rounded) == rounded


@given(st.lists(st.tuples(tokens, tokens, prices, prices), max_size=200))
def test_sums_of_costs_in_nanos_equal_the_decimal_sum(requests):
    costs = [
        token_cost(
            prompt_tokens=p,
            completion_tokens=c,
            cached_tokens=0,
            input_price=inp,
            output_price=out,
            cached_input_price=None,
        )
        for p, c, inp, out in requests
    ]
    decimal_sum = sum(costs, Decimal(0))
    nano_sum = sum(to_nanos(cost) for cost in costs)
    assert from_nanos(nano_sum) == decimal_sum
    assert to_nanos(decimal_sum) == nano_sum
    # Fraction arithmetic agrees to the unit as well.
    assert Fraction(decimal_sum) == sum((Fraction(c) for c in costs), Fraction(0))


# --- formatting -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "text"),
    [
        (Decimal("1E+11"), "100000000000"),
        (Decimal("100000000000"), "100000000000"),
        (Decimal("0.000001"), "0.000001"),
        (Decimal("1E-9"), "0.000000001"),
        (Decimal("0.0000102"), "0.0000102"),
        (Decimal("12.500000000"), "12.5"),
        (Decimal("0"), "0"),
        (Decimal("0E-9"), "0"),
        (Decimal("-0"), "0"),
        (Decimal("-0.000000000"), "0"),
        (Decimal("-1.50"), "-1.5"),
        (Decimal("123456789.123456789"), "123456789.123456789"),
    ],
)
def test_format_usd_examples(amount, text):
    assert format_usd(amount) == text


@given(
    st.decimals(allow_nan=False, allow_infinity=False, min_value=-(10**15), max_value=10**15)
    | st.decimals(allow_nan=False, allow_infinity=False, places=9, min_value=-1, max_value=1)
)
@example(Decimal("999999999999999.9999999999999999999995446168616094132006229681"))  # 64 digits
def test_format_usd_never_uses_exponent_and_is_exact(amount):
    text = format_usd(amount)
    assert "E" not in text and "e" not in text
    assert Decimal(text) == amount
    assert text != "-0"
    if "." in text:
        assert not text.endswith("0") and not text.endswith(".")


def test_format_usd_takes_any_exponent():
    assert format_usd(Decimal("1e1000000")) == "1" + "0" * 1_000_000
    assert format_usd(Decimal("-1e-1000000")).startswith("-0.000")
