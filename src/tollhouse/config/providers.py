"""Upstreams as the configuration names them: presets, provider entries, model routes
and operator prices. ``Settings`` holds them; the gateway's router and the catalog read
them."""

from __future__ import annotations

from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from tollhouse.errors import ConfigError

ProviderType = Literal["openai", "anthropic"]

# Base URLs of the presets a provider entry may name instead of spelling its URL out.
PRESETS: dict[str, tuple[ProviderType, str]] = {
    "openai": ("openai", "https://api.openai.com/v1"),
    "anthropic": ("anthropic", "https://api.anthropic.com"),
    "openrouter": ("openai", "https://openrouter.ai/api/v1"),
    "vllm": ("openai", "http://127.0.0.1:8000/v1"),
    "ollama": ("openai", "http://127.0.0.1:11434/v1"),
}


class _Frozen(BaseModel):
    # Built once and shared by every part of the app, so never changed after; a key
    # this model does not know (a typo in tollhouse.yaml) is an error, not ignored.
    model_config = ConfigDict(frozen=True, extra="forbid")


class ProviderConfig(_Frozen):
    """One upstream: an OpenAI-compatible base URL or the Anthropic Messages API."""

    preset: str | None = Field(
        default=None, description="One of openai, anthropic, openrouter, vllm, ollama."
    )
    type: ProviderType | None = Field(
        default=None, description="Wire format; taken from the preset when omitted."
    )
    base_url: str | None = Field(default=None, description="Overrides the preset's URL.")
    api_key: SecretStr | None = Field(default=None, description="Sent upstream; never logged.")
    pricing_provider: str | None = Field(
        default=None,
        description="Catalog provider whose prices apply (defaults to the preset's name).",
    )
    allow_unpriced: bool = Field(
        default=False, description="Serve models of this provider that have no price, at cost 0."
    )
    headers: dict[str, str] = Field(default_factory=dict, description="Extra upstream headers.")
    region: str = Field(
        default="",
        max_length=64,
        description="Where the provider serves from (eu, us-east…): policies read it.",
    )

    @property
    def resolved_type(self) -> ProviderType:
        if self.type is not None:
            return self.type
        if self.preset is not None:
            return PRESETS[self.preset][0]
        return "openai"

    @property
    def resolved_base_url(self) -> str:
        if self.base_url:
            return self.base_url.rstrip("/")
        if self.preset is not None:
            return PRESETS[self.preset][1]
        raise ConfigError("a provider needs a base_url or a preset")

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, value: str | None) -> str | None:
        if value is not None and value not in PRESETS:
            raise ValueError(f"unknown preset {value!r}; known: {', '.join(sorted(PRESETS))}")
        return value

    @model_validator(mode="after")
    def _has_an_address(self) -> ProviderConfig:
        if not self.base_url and self.preset is None:
            raise ValueError("a provider needs a base_url or a preset")
        return self

    def __repr_args__(self) -> Any:
        # Header values often carry credentials (``api-key``, ``x-goog-api-key``).
        for name, value in super().__repr_args__():
            yield name, ({k: "**********" for k in value} if name == "headers" else value)


class ModelRoute(_Frozen):
    """A model name clients may ask for, and the provider models that serve it in order."""

    name: str = Field(description="The name clients send as `model`.")
    targets: list[str] = Field(
        min_length=1,
        description="`provider/model` entries tried in order: the fallback chain.",
    )


class PriceOverride(_Frozen):
    """Operator price for one `provider/model`, USD per 1M tokens."""

    input: Decimal
    output: Decimal = Decimal(0)
    cached_input: Decimal | None = None
    cache_write_input: Decimal | None = None
    max_output_tokens: int | None = None
