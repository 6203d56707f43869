"""The shipped pricing catalog, its parser, overrides and exact costs."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from importlib import resources

import pytest

from tollhouse.config import load_settings
from tollhouse.gateway.routing import Router
from tollhouse.pricing import Catalog, ModelPrice, load_catalog
from tollhouse.pricing.catalog import parse_catalog


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return load_catalog()


def _raw_catalog() -> dict:
    text = resources.files("tollhouse.pricing").joinpath("catalog.json").read_text("utf-8")
    return json.loads(text)


def test_shipped_catalog_loads_with_enough_models(catalog):
    assert len(catalog) >= 40
    providers = {provider for provider, _ in catalog.prices}
    assert {"openai", "anthropic", "google", "mistral", "openrouter"} <= providers


def test_catalog_has_chat_and_embedding_models(catalog):
    modes = {price.mode for price in catalog.prices.values()}
    assert modes == {"chat", "embedding"}
    embeddings = [p for p in catalog.prices.values() if p.mode == "embedding"]
    assert any(p.provider == "openai" for p in embeddings)
    for price in embeddings:
        assert price.output == 0


def test_catalog_is_dated_and_sourced(catalog):
    assert isinstance(catalog.taken_on, date)
    assert catalog.taken_on.year >= 2025
    providers = {provider for provider, _ in catalog.prices}
    for provider in providers:
        assert catalog.sources[provider].startswith("https://"), provider


def test_every_price_is_an_exact_decimal(catalog):
    for (provider, model), price in catalog.prices.items():
        assert (price.provider, price.model) == (provider, model)
        for amount in (price.input, price.output, price.cached_input, price.cache_write_input):
            if amount is None:
                continue
            assert isinstance(amount, Decimal), (provider, model)
            assert amount.is_finite() and amount >= 0, (provider, model)


def test_prices_in_the_file_are_strings_never_floats():
    for entry in _raw_catalog()["models"]:
        for key in ("input", "output", "cached_input", "cache_write_input"):
            value = entry.get(key)
            assert value is None or isinstance(value, str), (entry["model"], key)


def test_catalog_prices_are_plausible(catalog):
    for price in catalog.prices.values():
        where = f"{price.provider}/{price.model}"
        assert price.input > 0 or price.provider == "openrouter", where
        if price.cached_input is not None:
            assert price.cached_input <= price.input, where
        if price.cache_write_input is not None:
            assert price.cache_write_input >= price.input, where
        if price.mode == "chat":
            assert price.output >= price.input, where
        if price.max_output_tokens is not None:
            assert price.max_output_tokens > 0, where


def test_known_prices(catalog):
    mini = catalog.get("openai", "gpt-4o-mini")
    assert mini is not None
    assert (mini.input, mini.output, mini.cached_input) == (
        Decimal("0.15"),
        Decimal("0.60"),
        Decimal("0.075"),
    )
    assert catalog.get("openai", "text-embedding-3-small") is not None
    assert catalog.get("anthropic", "claude-haiku-4-5") is not None
    assert catalog.get("openai", "no-such-model") is None
    assert catalog.providers_of("gpt-4o-mini") == ["openai"]
    assert catalog.providers_of("no-such-model") == []


def _catalog_data(*models: dict) -> dict:
    return {"taken_on": "2026-01-02", "sources": {"x": "https://x.example"}, "models": list(models)}


def test_parse_catalog_minimal_entry():
    catalog = parse_catalog(_catalog_data({"provider": "x", "model": "m", "input": "1.5"}))
    price = catalog.get("x", "m")
    assert price == ModelPrice(
        provider="x",
        model="m",
        mode="chat",
        input=Decimal("1.5"),
        output=Decimal(0),
        cached_input=None,
    )
    assert catalog.taken_on == date(2026, 1, 2)
    assert catalog.sources == {"x": "https://x.example"}


def test_parse_catalog_rejects_duplicates():
    entry = {"provider": "x", "model": "m", "input": "1"}
    with pytest.raises(ValueError, match="x/m.*twice"):
        parse_catalog(_catalog_data(entry, {**entry, "input": "2"}))


def test_same_model_under_two_providers_is_not_a_duplicate():
    catalog = parse_catalog(
        _catalog_data(
            {"provider": "x", "model": "m", "input": "1"},
            {"provider": "y", "model": "m", "input": "2"},
        )
    )
    assert sorted(catalog.providers_of("m")) == ["x", "y"]


@pytest.mark.parametrize("bad", [1.5, 2, "-1", "NaN", "Infinity", None])
def test_parse_catalog_rejects_non_decimal_prices(bad):
    with pytest.raises((ValueError, ArithmeticError)):
        parse_catalog(_catalog_data({"provider": "x", "model": "m", "input": bad}))


def test_parse_catalog_rejects_bad_date():
    data = _catalog_data({"provider": "x", "model": "m", "input": "1"})
    data["taken_on"] = "yesterday"
    with pytest.raises(ValueError):
        parse_catalog(data)


@pytest.mark.parametrize(
    ("prompt", "completion", "cached", "written", "expected"),
    [
        (1_000_000, 0, 0, 0, "3"),
        (0, 1_000_000, 0, 0, "15"),
        (1, 1, 0, 0, "0.000018"),
        (1000, 100, 0, 0, "0.0045"),
        (1000, 100, 1000, 0, "0.0018"),  # all cache reads at 0.30
        (1000, 0, 0, 1000, "0.00375"),  # all cache writes at 3.75
        (1000, 0, 500, 500, "0.00202500"),
        (7, 3, 0, 0, "0.000066"),
    ],
)
def test_model_price_cost_examples(prompt, completion, cached, written, expected):
    sonnet = ModelPrice(
        provider="anthropic",
        model="claude-sonnet-4-5",
        mode="chat",
        input=Decimal("3.00"),
        output=Decimal("15.00"),
        cached_input=Decimal("0.30"),
        cache_write_input=Decimal("3.75"),
    )
    assert sonnet.cost(prompt, completion, cached, written) == Decimal(expected)


def test_model_price_cost_rounds_up_to_the_nano_dollar():
    cheap = ModelPrice("x", "m", "chat", Decimal("0.01"), Decimal("0.01"), None)
    # 1 token at 0.01 USD per 1M = 1e-8 USD exactly; 3 tokens = 3e-8.
    assert cheap.cost(1, 0) == Decimal("0.00000001")
    tiny = ModelPrice("x", "m", "chat", Decimal("0.0005"), Decimal(0), None)
    # 1 token = 5e-10 USD: charged one nano-dollar, never zero.
    assert tiny.cost(1, 0) == Decimal("0.000000001")
    assert tiny.cost(0, 0) == 0


def test_cached_tokens_without_cached_price_cost_the_input_price():
    price = ModelPrice("x", "m", "chat", Decimal("2"), Decimal("4"), None)
    assert price.cost(1000, 0, cached_tokens=1000) == price.cost(1000, 0)


def test_shipped_catalog_costs(catalog):
    mini = catalog.get("openai", "gpt-4o-mini")
    # The dev upstream's "hi": 4 prompt tokens, 16 completion tokens.
    assert mini.cost(4, 16) == Decimal("0.0000102")
    embedding = catalog.get("openai", "text-embedding-3-small")
    assert embedding.cost(2, 0) == Decimal("0.00000004")


# --- overrides ------------------------------------------------------------------------


def _router(**overrides) -> Router:
    settings = load_settings(env={"TOLLHOUSE_CONFIG": "/dev/null"}, **overrides)
    return Router(settings, load_catalog())


def test_settings_override_wins_over_catalog():
    router = _router(
        providers={"openai": {"preset": "openai"}},
        pricing={"openai/gpt-4o-mini": {"input": "1", "output": "2", "cached_input": "0.5"}},
    )
    (target,) = router.resolve("gpt-4o-mini")
    assert target.price is not None
    assert (target.price.input, target.price.output, target.price.cached_input) == (
        Decimal("1"),
        Decimal("2"),
        Decimal("0.5"),
    )
    assert target.price.cost(1_000_000, 1_000_000) == Decimal("3")


def test_override_prices_a_model_the_catalog_does_not_know():
    router = _router(
        providers={"local": {"preset": "vllm"}},
        pricing={
            "local/llama-3.1-8b": {"input": "0.05", "output": "0.08", "max_output_tokens": 99}
        },
    )
    (target,) = router.resolve("llama-3.1-8b")
    assert target.label == "local/llama-3.1-8b"
    assert target.price is not None
    assert target.price.max_output_tokens == 99
    assert target.price.cost(1000, 1000) == Decimal("0.00013")


def test_override_for_one_provider_leaves_others_on_the_catalog():
    router = _router(
        providers={"openai": {"preset": "openai"}, "or": {"preset": "openrouter"}},
        pricing={"or/openai/gpt-4o-mini": {"input": "9", "output": "9"}},
    )
    (openai_target,) = router.resolve("openai/gpt-4o-mini")
    assert openai_target.price is not None
    assert openai_target.price.input == Decimal("0.15")
    (or_target,) = router.resolve("or/openai/gpt-4o-mini")
    assert or_target.price is not None
    assert or_target.price.input == Decimal("9")
