"""``GET /catalog/models`` and ``GET /catalog/providers``: public, like ``/healthz``
(docs/catalog.md). Their refusals have the admin API's shape, since the admin API's
OpenAPI document describes them (``admin/openapi.py``)."""

from __future__ import annotations

from typing import Protocol

from starlette.requests import Request
from starlette.responses import Response

from tollhouse.catalog.schemas import CatalogModels, CatalogProviders, ModelsQuery
from tollhouse.catalog.service import Listing
from tollhouse.web.responses import JSONResponse
from tollhouse.web.routing import Answer, Operation, Resource


class CatalogServices(Protocol):
    """What these routes use of the running service (``web/services.py``)."""

    @property
    def catalog_listing(self) -> Listing: ...


def _listing(request: Request) -> Listing:
    services: CatalogServices = request.app.services
    return services.catalog_listing


async def models(request: Request) -> Response:
    q = ModelsQuery.parse(request.query_params)
    catalog = _listing(request)
    selection = catalog.select(provider=q.provider, mode=q.mode, routable=q.routable)
    return JSONResponse(catalog.written(selection))


async def providers(request: Request) -> Response:
    catalog = _listing(request)
    return JSONResponse(catalog.providers)


# Full paths: served at the root, outside the admin mount, with no credentials.
routes = [
    Resource(
        "/catalog/models",
        {
            "GET": Operation(
                models,
                "Every model a request may name, with its providers, prices per 1M tokens "
                "and limits, and whether this configuration routes it",
                {200: Answer(CatalogModels, "The models that pass the filters, by id")},
                query=ModelsQuery,
                tag="catalog",
            )
        },
    ),
    Resource(
        "/catalog/providers",
        {
            "GET": Operation(
                providers,
                "The configured providers (nothing secret) and the shipped pricing catalog's "
                "date and sources",
                {200: Answer(CatalogProviders, "In configuration order")},
                tag="catalog",
            )
        },
    ),
]
