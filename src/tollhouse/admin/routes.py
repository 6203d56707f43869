"""Every ``/api`` route, in one place: what ``app.py`` mounts and the OpenAPI document
describes (``GET /api/openapi.json``).

- ``routes``: mounted under ``/api`` behind the admin key (``admin/auth.py``):
  governance, usage, notification channels and alerts, credits, policies, sandboxes, and this
  document;
- ``webhook_routes``: ``/api/webhooks/budget`` and ``/api/webhooks/stripe``, whose
  credential is their signature.

The document also describes the public catalog (``/catalog/*``, ``catalog/routes.py``),
which needs no credential: one contract for every JSON API that is not a provider's.
"""

from __future__ import annotations

import functools
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from tollhouse.admin.openapi import OpenAPIDocument, build
from tollhouse.alerts.routes import routes as alert_routes
from tollhouse.alerts.routes import webhook_routes as alert_webhooks
from tollhouse.catalog.routes import routes as catalog_routes
from tollhouse.credits.routes import routes as credit_routes
from tollhouse.credits.routes import webhook_routes as credit_webhooks
from tollhouse.governance.routes import routes as governance_routes
from tollhouse.ledger.routes import routes as ledger_routes
from tollhouse.policies.routes import routes as policy_routes
from tollhouse.sandboxes.routes import routes as sandbox_routes
from tollhouse.web.responses import JSONResponse
from tollhouse.web.routing import Answer, Operation, Resource


async def openapi(request: Request) -> Response:
    return JSONResponse(document())


routes = [
    *governance_routes,
    *ledger_routes,
    *alert_routes,
    *credit_routes,
    *policy_routes,
    *sandbox_routes,
    Resource(
        "/openapi.json",
        {
            "GET": Operation(
                openapi,
                "This document",
                {200: Answer(OpenAPIDocument, "OpenAPI 3.1")},
                tag="meta",
            )
        },
    ),
]

webhook_routes = [*alert_webhooks, *credit_webhooks]

__all__ = ["document", "routes", "webhook_routes"]


@functools.cache
def document() -> dict[str, Any]:
    """The admin API's OpenAPI document (built once)."""
    return build(routes, alert_webhooks, catalog_routes, credit_webhooks)
