"""The catalog's queries and answers (``GET /catalog/models``, ``GET /catalog/providers``).

Shaped after OpenRouter's ``GET /api/v1/models`` (``{"data": [...]}``, ``id``,
``context_length``, a ``pricing`` object) except where that shape would mislead:
OpenRouter's ``pricing.prompt``/``completion`` are USD per *token* as strings, ours are
USD per *1M tokens* as exact numbers, so the keys are the catalog's own (``input``,
``output``…) and a client written for OpenRouter finds no key rather than a price off
by a factor of a million (docs/catalog.md).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, cast, get_args

from pydantic import Field, PlainValidator, WithJsonSchema

from tollhouse.config import ProviderType
from tollhouse.errors import ValidationFailed
from tollhouse.web.query import Filter, Query
from tollhouse.web.responses import Exact, Reply

Mode = Literal["chat", "embedding"]
PriceSource = Literal["catalog", "configuration"]


def _mode(value: Any) -> Mode | None:
    if value is None or value == "":
        return None
    if value in get_args(Mode):
        return cast(Mode, value)
    raise ValidationFailed("mode must be chat or embedding", param="mode")


def _routable(value: Any) -> bool | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):  # a query built in code
        return value
    # Only the two words: pydantic would also take yes, on and 1, which the document does
    # not say (and a generated client would never send).
    if value not in ("true", "false"):
        raise ValidationFailed("routable must be true or false", param="routable")
    return bool(value == "true")


# Empty is the same as absent, as for every filter (docs/http.md).
ModeFilter = Annotated[
    Mode | None,
    PlainValidator(_mode),
    WithJsonSchema({"type": "string", "enum": ["chat", "embedding", ""]}),
]
RoutableFilter = Annotated[
    bool | None,
    PlainValidator(_routable),
    WithJsonSchema({"type": "string", "enum": ["true", "false", ""]}),
]


class ModelsQuery(Query):
    provider: Filter = Field(
        default=None,
        description="only models a configured provider of this name serves, or whose catalog "
        "provider it is (openai, anthropic, openrouter…)",
    )
    mode: ModeFilter = Field(default=None, description="only chat or only embedding models")
    routable: RoutableFilter = Field(
        default=None,
        description="true: only what a request can name with this configuration; false: "
        "only the rest",
    )


class CatalogPricing(Reply):
    """USD per 1M tokens, exact (JSON numbers written digit for digit)."""

    input: Exact
    output: Exact
    cached_input: Exact | None = Field(description="cache reads; null: billed at input")
    cache_write_input: Exact | None = Field(description="cache writes; null: billed at input")


class CatalogModel(Reply):
    """One name a request may send as ``model``, and what it would get."""

    id: str = Field(description="the `model` a request sends")
    mode: Mode
    routable: bool = Field(description="a request naming `id` is served with this configuration")
    providers: list[str] = Field(
        description="configured providers that serve it, in fallback order; [] if not routable"
    )
    targets: list[str] = Field(
        description="`provider/model` sent upstream, in fallback order; [] if not routable"
    )
    catalog: str | None = Field(
        description="the shipped catalog's entry (`provider/model`) it is described by; null: "
        "not in the catalog"
    )
    context_length: int | None = Field(description="context window, tokens; null: unknown")
    max_output_tokens: int | None = Field(
        description="output cap reserved for a request that sets none; null: the "
        "gateway's default_max_output_tokens"
    )
    pricing: CatalogPricing | None = Field(
        description="what the first target is charged; null: unpriced (served at cost 0) "
        "or not routable as a route"
    )
    price_source: PriceSource | None = Field(
        description="catalog, or a `pricing:` override in the configuration; null with pricing"
    )
    reason: str | None = Field(description="why it is not routable; null when it is")


class CatalogModels(Reply):
    data: list[CatalogModel]
    count: int
    currency: Literal["USD"]
    unit: Literal["per_1m_tokens"]


class CatalogProvider(Reply):
    """A configured provider, without anything secret (docs/catalog.md)."""

    name: str = Field(description="the name routes and `provider/model` use")
    type: ProviderType = Field(description="wire format: OpenAI-compatible or Anthropic Messages")
    preset: str | None
    host: str | None = Field(
        description="the host of a preset's public address (api.openai.com); null when the "
        "operator set the address, which may be internal"
    )
    pricing_provider: str = Field(description="the catalog provider whose prices apply")
    allow_unpriced: bool = Field(description="models with no price are served at cost 0")
    models: int = Field(description="routable entries of GET /catalog/models it serves")


class CatalogInfo(Reply):
    """The pricing catalog shipped with this version (docs/pricing.md)."""

    taken_on: Annotated[str, WithJsonSchema({"type": "string", "format": "date"})] = Field(
        description="the day its prices were taken"
    )
    currency: Literal["USD"]
    unit: Literal["per_1m_tokens"]
    models: int
    sources: dict[str, str] = Field(description="catalog provider: the page prices come from")


class CatalogProviders(Reply):
    data: list[CatalogProvider]
    count: int
    catalog: CatalogInfo
