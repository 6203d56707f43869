"""The pricing catalog shipped in the package (``catalog.json``), loaded into ``Decimal``.

Nothing here reaches the network: prices are data with the date they were taken and the
pages they were taken from, and operators override them in configuration.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from importlib import resources
from typing import Any

from tollhouse.money import token_cost


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """What one model costs, USD per 1M tokens, and its default output cap."""

    provider: str
    model: str
    mode: str
    input: Decimal
    output: Decimal
    cached_input: Decimal | None
    max_output_tokens: int | None = None
    context_window: int | None = None
    cache_write_input: Decimal | None = None
    # Worst-case input and output price per token in pico-dollars (1e-12 USD): exact
    # integers for prices with up to six decimals per 1M tokens (rounded up beyond).
    # Admission multiplies these by token bounds on every request, so they are computed
    # once here rather than from Decimals each time.
    worst_pico_rates: tuple[int, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        worst_input = max(self.input, self.cache_write_input or self.input)
        rates = (math.ceil(worst_input * 1_000_000), math.ceil(self.output * 1_000_000))
        object.__setattr__(self, "worst_pico_rates", rates)

    def cost(
        self,
        prompt_tokens: int,
        completion_tokens: int,
        cached_tokens: int = 0,
        cache_write_tokens: int = 0,
    ) -> Decimal:
        """Exact cost of one request, rounded up to the nano-dollar."""
        return token_cost(
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            cached_tokens=cached_tokens,
            input_price=self.input,
            output_price=self.output,
            cached_input_price=self.cached_input,
            cache_write_tokens=cache_write_tokens,
            cache_write_price=self.cache_write_input,
        )


@dataclass(frozen=True)
class Catalog:
    taken_on: date
    sources: dict[str, str]
    prices: dict[tuple[str, str], ModelPrice]

    def get(self, provider: str, model: str) -> ModelPrice | None:
        return self.prices.get((provider, model))

    def providers_of(self, model: str) -> list[str]:
        """Catalog providers that list ``model`` under exactly that id."""
        return [provider for (provider, name) in self.prices if name == model]

    def __len__(self) -> int:
        return len(self.prices)


def _decimal(value: Any, where: str) -> Decimal:
    if not isinstance(value, str):
        raise ValueError(f"{where}: prices are decimal strings, got {value!r}")
    price = Decimal(value)
    if not price.is_finite() or price < 0:
        raise ValueError(f"{where}: price must be a non-negative number, got {value!r}")
    return price


def parse_catalog(data: dict[str, Any]) -> Catalog:
    prices: dict[tuple[str, str], ModelPrice] = {}
    for entry in data["models"]:
        where = f"{entry['provider']}/{entry['model']}"
        cached = entry.get("cached_input")
        written = entry.get("cache_write_input")
        price = ModelPrice(
            provider=entry["provider"],
            model=entry["model"],
            mode=entry.get("mode", "chat"),
            input=_decimal(entry["input"], where),
            output=_decimal(entry.get("output", "0"), where),
            cached_input=None if cached is None else _decimal(cached, where),
            max_output_tokens=entry.get("max_output_tokens") or None,
            context_window=entry.get("context_window"),
            cache_write_input=None if written is None else _decimal(written, where),
        )
        if (price.provider, price.model) in prices:
            raise ValueError(f"{where}: listed twice in the pricing catalog")
        prices[(price.provider, price.model)] = price
    return Catalog(
        taken_on=date.fromisoformat(data["taken_on"]),
        sources=dict(data.get("sources", {})),
        prices=prices,
    )


def load_catalog() -> Catalog:
    """The catalog shipped with this version of Tollhouse."""
    text = resources.files("tollhouse.pricing").joinpath("catalog.json").read_text("utf-8")
    return parse_catalog(json.loads(text))
