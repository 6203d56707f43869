"""What the gateway serves, and at what price: the shipped catalog seen through the
settings (docs/catalog.md).

Built from ``Settings`` and the ``Catalog`` alone: no request, no I/O. An entry says
what a request naming its ``id`` would get, so routability, targets and prices come from
the gateway's own ``Router`` rather than a second reading of the rules, and the
listing cannot disagree with the request path.

Entries, each ``id`` once (the first source wins):

1. every route under ``models:``;
2. every catalog model of a configured provider's catalog provider, under its bare name
   when that resolves to this provider, else as ``provider/model``;
3. every ``pricing:`` override, named the same way;
4. every other catalog model, as ``catalog-provider/model``: not routable, listed for
   its prices.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson

from tollhouse.catalog.schemas import (
    CatalogInfo,
    CatalogModel,
    CatalogModels,
    CatalogPricing,
    CatalogProvider,
    CatalogProviders,
    Mode,
    PriceSource,
)
from tollhouse.config import PRESETS, ProviderConfig, Settings
from tollhouse.errors import TollhouseError
from tollhouse.gateway.routing import Router, Target, pricing_provider
from tollhouse.pricing import Catalog, ModelPrice
from tollhouse.web.responses import dumps

# A preset's address is public knowledge; any other is the operator's and may name an
# internal host, which a keyless endpoint must not tell.
_PUBLIC_ADDRESSES = frozenset(url for _, url in PRESETS.values())


@dataclass(frozen=True, slots=True)
class Listing:
    """The whole catalog for one configuration, built once per application."""

    models: tuple[CatalogModel, ...]
    providers: CatalogProviders
    # Each model's JSON, written once. The endpoint is keyless and its answer holds
    # hundreds of exact prices, each a call to write; joining written entries is cheap.
    _written: dict[str, orjson.Fragment] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        written = {model.id: orjson.Fragment(dumps(model)) for model in self.models}
        object.__setattr__(self, "_written", written)

    def select(
        self, *, provider: str | None = None, mode: Mode | None = None, routable: bool | None = None
    ) -> CatalogModels:
        """The models that pass every filter given (``None``: no filter)."""
        data = [
            model
            for model in self.models
            if (provider is None or provider in model.providers or _owner(model) == provider)
            and (mode is None or model.mode == mode)
            and (routable is None or model.routable == routable)
        ]
        return CatalogModels(data=data, count=len(data), currency="USD", unit="per_1m_tokens")

    def written(self, selection: CatalogModels) -> dict[str, Any]:
        """``selection`` as ``JSONResponse`` content, from the entries written once."""
        return {
            **selection.model_dump(exclude={"data"}),
            "data": [self._written[model.id] for model in selection.data],
        }


def listing(settings: Settings, catalog: Catalog) -> Listing:
    models = _models(settings, catalog)
    providers = [
        _provider(settings, name, cfg, sum(name in m.providers for m in models))
        for name, cfg in settings.providers.items()
    ]
    info = CatalogInfo(
        taken_on=catalog.taken_on.isoformat(),
        currency="USD",
        unit="per_1m_tokens",
        models=len(catalog),
        sources=dict(catalog.sources),
    )
    return Listing(
        tuple(models), CatalogProviders(data=providers, count=len(providers), catalog=info)
    )


def _owner(model: CatalogModel) -> str | None:
    return model.catalog.partition("/")[0] if model.catalog else None


def _models(settings: Settings, catalog: Catalog) -> list[CatalogModel]:
    router = Router(settings, catalog)
    found: dict[str, CatalogModel] = {}

    def add(name: str) -> None:
        if name not in found:
            found[name] = _entry(router, catalog, name)

    for route in settings.models:
        add(route.name)
    served = set()
    for name, cfg in settings.providers.items():
        owner = pricing_provider(name, cfg)
        served.add(owner)
        for provider, model in catalog.prices:
            if provider == owner:
                add(_name(router, name, model))
    for key in settings.pricing:
        head, _, model = key.partition("/")
        add(_name(router, head, model) if head in settings.providers and model else key)
    for (provider, model), price in catalog.prices.items():
        name = f"{provider}/{model}"
        if provider not in served and name not in found:
            found[name] = _unserved(name, price)
    return [found[name] for name in sorted(found)]


def _name(router: Router, provider: str, model: str) -> str:
    """The shortest name a request can send for ``model`` of ``provider``: the bare one
    when the router sends it there, else ``provider/model``."""
    try:
        targets = router.resolve(model)
    except TollhouseError:
        targets = ()
    if len(targets) == 1 and (targets[0].provider, targets[0].model) == (provider, model):
        return model
    return f"{provider}/{model}"


def _entry(router: Router, catalog: Catalog, name: str) -> CatalogModel:
    try:
        targets = router.resolve(name)
    except TollhouseError as exc:
        return CatalogModel(
            id=name,
            mode="chat",
            routable=False,
            providers=[],
            targets=[],
            catalog=None,
            context_length=None,
            max_output_tokens=None,
            pricing=None,
            price_source=None,
            reason=exc.message,
        )
    first = targets[0]
    owner = pricing_provider(first.provider, router.provider_config(first.provider))
    described = catalog.get(owner, first.model)
    price = first.price
    return CatalogModel(
        id=name,
        mode=_mode(described or price),
        routable=True,
        providers=list(dict.fromkeys(t.provider for t in targets)),
        targets=[t.label for t in targets],
        catalog=f"{owner}/{first.model}" if described else None,
        context_length=described.context_window if described else None,
        max_output_tokens=price.max_output_tokens if price else None,
        pricing=_pricing(price),
        price_source=_source(first, described),
        reason=None,
    )


def _unserved(name: str, price: ModelPrice) -> CatalogModel:
    return CatalogModel(
        id=name,
        mode=_mode(price),
        routable=False,
        providers=[],
        targets=[],
        catalog=name,
        context_length=price.context_window,
        max_output_tokens=price.max_output_tokens,
        pricing=_pricing(price),
        price_source="catalog",
        reason=f"no configured provider takes {price.provider}'s prices (a preset or "
        f"pricing_provider `{price.provider}`)",
    )


def _mode(price: ModelPrice | None) -> Mode:
    return "embedding" if price is not None and price.mode == "embedding" else "chat"


def _pricing(price: ModelPrice | None) -> CatalogPricing | None:
    if price is None:
        return None
    return CatalogPricing(
        input=price.input,
        output=price.output,
        cached_input=price.cached_input,
        cache_write_input=price.cache_write_input,
    )


def _source(target: Target, described: ModelPrice | None) -> PriceSource | None:
    if target.price is None:
        return None
    # The router hands out the catalog's own object, or builds one from an override.
    return "catalog" if target.price is described else "configuration"


def _provider(settings: Settings, name: str, cfg: ProviderConfig, models: int) -> CatalogProvider:
    address = cfg.resolved_base_url
    return CatalogProvider(
        name=name,
        type=cfg.resolved_type,
        preset=cfg.preset,
        host=urlsplit(address).hostname if address in _PUBLIC_ADDRESSES else None,
        pricing_provider=pricing_provider(name, cfg),
        allow_unpriced=settings.allow_unpriced or cfg.allow_unpriced,
        models=models,
    )
