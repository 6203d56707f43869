"""From the ``model`` a client asks for to the provider models that will serve it.

Resolution order (documented in docs/providers.md):

1. a configured model route (``models:``) — its targets are the fallback chain;
2. ``provider/model`` where ``provider`` is a configured provider's name;
3. a bare name the pricing catalog knows, served by the configured provider whose
   catalog prices apply to it (``gpt-4o-mini`` → the ``openai`` provider);
4. any other bare name, when exactly one provider is configured.

Every target must have a price, or belong to a provider (or deployment) where the
operator allowed unpriced use: an unknown price is never free.

Resolutions are cached, at most ``CACHE_LIMIT`` of them: with unpriced use allowed,
clients choose the names, so the oldest entry makes way for a new one.
"""

from __future__ import annotations

from dataclasses import dataclass

from tollhouse.config import ProviderConfig, Settings
from tollhouse.errors import ModelNotFound, ModelNotPriced
from tollhouse.pricing import Catalog, ModelPrice

CACHE_LIMIT = 1024


@dataclass(frozen=True, slots=True)
class Target:
    """One provider model a request may be sent to."""

    provider: str
    model: str
    price: ModelPrice | None  # None: unpriced use the operator allowed; charged 0

    @property
    def label(self) -> str:
        return f"{self.provider}/{self.model}"


class Router:
    def __init__(self, settings: Settings, catalog: Catalog) -> None:
        self._settings = settings
        self._catalog = catalog
        self._routes = {route.name: route.targets for route in settings.models}
        self._cache: dict[str, tuple[Target, ...]] = {}

    def resolve(self, requested: str) -> tuple[Target, ...]:
        """The fallback chain for ``requested``; raises ``ModelNotFound``/``ModelNotPriced``."""
        cached = self._cache.get(requested)
        if cached is not None:
            return cached
        pairs = self._pairs(requested)
        targets = tuple(self._priced(provider, model) for provider, model in pairs)
        cache = self._cache
        if len(cache) >= CACHE_LIMIT:
            # Dicts keep insertion order: this drops the oldest, in O(1). Clearing the
            # whole cache instead would let a stream of new names evict every route.
            del cache[next(iter(cache))]
        cache[requested] = targets
        return targets

    def target(self, provider: str, model: str) -> Target:
        """``model`` served by the configured ``provider``, priced (or ``ModelNotPriced``)."""
        return self._priced(provider, model)

    @property
    def cache_size(self) -> int:
        return len(self._cache)

    def provider_config(self, name: str) -> ProviderConfig:
        return self._settings.providers[name]

    def listed_models(self) -> list[tuple[str, str]]:
        """``(id, owner)`` for every model a client can name: routes, then catalog models."""
        seen: dict[str, str] = {name: "tollhouse" for name in self._routes}
        for name, cfg in self._settings.providers.items():
            pricing = pricing_provider(name, cfg)
            for provider, model in self._catalog.prices:
                if provider == pricing:
                    seen.setdefault(model, name)
                    seen.setdefault(f"{name}/{model}", name)
        for key in self._settings.pricing:
            seen.setdefault(key, key.partition("/")[0])
        return sorted(seen.items())

    def _pairs(self, requested: str) -> list[tuple[str, str]]:
        providers = self._settings.providers
        if requested in self._routes:
            pairs = [self._split(target) for target in self._routes[requested]]
            return pairs
        head, sep, rest = requested.partition("/")
        if sep and rest and head in providers:
            return [(head, rest)]
        for catalog_provider in self._catalog.providers_of(requested):
            for name, cfg in providers.items():
                if pricing_provider(name, cfg) == catalog_provider:
                    return [(name, requested)]
        if len(providers) == 1:
            return [(next(iter(providers)), requested)]
        if not providers:
            raise ModelNotFound(
                f"The model `{requested}` cannot be served: no provider is configured. "
                "Set OPENAI_API_KEY / OPENAI_BASE_URL (or ANTHROPIC_*) or add `providers:` "
                "to tollhouse.yaml.",
                param="model",
            )
        raise ModelNotFound(
            f"The model `{requested}` does not exist or is not routed: name it as "
            f"`provider/model` with one of {', '.join(sorted(providers))}, or add a route "
            "under `models:`.",
            param="model",
        )

    def _split(self, target: str) -> tuple[str, str]:
        head, _, rest = target.partition("/")
        if head not in self._settings.providers or not rest:
            raise ModelNotFound(f"route target `{target}` names no configured provider")
        return head, rest

    def _priced(self, provider: str, model: str) -> Target:
        settings = self._settings
        override = settings.pricing.get(f"{provider}/{model}")
        if override is not None:
            return Target(
                provider,
                model,
                ModelPrice(
                    provider=provider,
                    model=model,
                    mode="chat",
                    input=override.input,
                    output=override.output,
                    cached_input=override.cached_input,
                    cache_write_input=override.cache_write_input,
                    max_output_tokens=override.max_output_tokens,
                ),
            )
        cfg = settings.providers[provider]
        catalog_price = self._catalog.get(pricing_provider(provider, cfg), model)
        if catalog_price is not None:
            return Target(provider, model, catalog_price)
        if settings.allow_unpriced or cfg.allow_unpriced:
            return Target(provider, model, None)
        raise ModelNotPriced(
            f"No price is known for `{provider}/{model}`, so Tollhouse will not serve it "
            f"(an unknown price is never free). Add `pricing: {{'{provider}/{model}': "
            "{input: …, output: …}}` to the configuration, or allow unpriced use with "
            "`allow_unpriced: true` on the provider.",
            param="model",
        )


def pricing_provider(name: str, cfg: ProviderConfig) -> str:
    """The catalog provider whose prices apply to the configured provider ``name``."""
    return cfg.pricing_provider or cfg.preset or name
