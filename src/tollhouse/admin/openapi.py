"""The admin API's OpenAPI 3.1 document, served at ``GET /api/openapi.json``.

Generated (``web/openapi.py``) from the routes themselves: each names the Pydantic models
of its request body, its query and each answer, so the document cannot drift from what
is accepted or answered. This module adds what is the admin API's as a whole: the
refusals every operation may meet (authentication, body size…), the credentials, the
time-zone list, and the words. ``tests/admin/test_openapi_conformance.py`` calls every
route and checks each real answer against this document; ``tests/fuzz`` runs
schemathesis over it.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from pydantic import Field
from starlette.routing import BaseRoute

from tollhouse.governance.fields import time_zones
from tollhouse.web.openapi import Section, document
from tollhouse.web.responses import Reply


class Error(Reply):
    """Every refusal of the admin API (docs/errors.md)."""

    error: str = Field(description="what went wrong")
    code: str = Field(description="a machine code", examples=["not_found"])


class OpenAPIDocument(Reply):
    """This document."""

    openapi: str
    info: dict[str, Any]
    paths: dict[str, Any]
    components: dict[str, Any]
    security: list[dict[str, list[str]]]


ERRORS = {
    400: "Invalid JSON (not an object, deeper than max_json_depth, NaN…), a field that "
    "fails validation (wrong type, bad value, an unknown team_id or customer_id), a NUL "
    "character in the body or a query parameter, or a query parameter out of its bounds",
    401: "Admin key missing or wrong (when TOLLHOUSE_ADMIN_KEY is set); on the budget "
    "webhook, a Tollhouse-Signature, on the Stripe webhook a Stripe-Signature, that is "
    "missing, malformed, stale or wrong",
    403: "No admin key is set and the client is not loopback, comes through a proxy or "
    "from another site's page (Origin)",
    404: "No such entity",
    405: "The path does not take this method (OPTIONS included); Allow lists those it does",
    409: "A stored secret the server cannot decrypt: TOLLHOUSE_SECRET_KEY is not set or is "
    "not the key that encrypted it (code secret_unreadable; the message names the fix); "
    "or a write that contradicts what is stored: an owner's second credit account, an "
    "Idempotency-Key reused for a different grant (code conflict)",
    413: "The request body is larger than max_request_body_mb",
    415: "No admin key is set and a POST is not Content-Type: application/json",
    421: "No admin key is set and Host is not a loopback name",
    422: "A signed budget or Stripe event that is JSON but not a valid event (the message "
    "names the field)",
    429: "Too many failed admin-key or signature checks from this address this minute "
    "(code too_many_failures)",
    502: "Stripe refused the request or could not be reached (the message says which)",
    503: "Inbound budget webhooks are off (TOLLHOUSE_INBOUND_WEBHOOK_SECRET is not set); "
    "Stripe is not configured (TOLLHOUSE_STRIPE_SECRET_KEY, TOLLHOUSE_STRIPE_WEBHOOK_SECRET)",
}

DESCRIPTION = """\
Governance (Bifrost-compatible), usage, notification channels and alerts, prepaid \
credits and Stripe top-ups (docs/credits.md), inbound \
budget webhooks, and the public catalog of models and providers (`/catalog/*`: no \
credentials; docs/catalog.md).

- Errors are `{"error": "<message>", "code": "<machine code>"}`.
- Times are RFC 3339 in UTC with microseconds and a `Z`: `2026-11-21T10:00:00.000000Z`.
- USD amounts and ratios are JSON numbers written digit for digit (never through a float).
- Every answer has exactly the properties its schema lists; unset ones are `null`.
- A method a path does not take is a 405 whose `Allow` header lists the ones it does; \
`HEAD` is answered as `GET`, and `OPTIONS` is such a 405 (there is no CORS preflight: \
the admin API is not for browsers).
"""

# What any admin request may be answered, whatever its operation: authentication (the
# admin key, or the keyless loopback rules) and the body-size limit. A 405 needs a method
# the path does not take, so no documented operation is answered one.
_ADMIN_ALWAYS = (401, 403, 413, 421, 429)


def build(
    admin_routes: Sequence[BaseRoute],
    webhook_routes: Sequence[BaseRoute],
    public_routes: Sequence[BaseRoute] = (),
    stripe_routes: Sequence[BaseRoute] = (),
) -> dict[str, Any]:
    """The document for the routes mounted under ``/api`` behind the admin key, the
    signed webhook routes and the public ones (full paths, no credentials: the catalog)."""
    try:
        release = version("tollhouse")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        release = "0"
    return document(
        info={"title": "Tollhouse admin API", "version": release, "description": DESCRIPTION},
        sections=[
            Section("/api", admin_routes, always=_ADMIN_ALWAYS, with_body=(400, 415)),
            Section(
                "",
                webhook_routes,
                always=(401, 413, 429),
                security=[{"webhookSignature": []}],
            ),
            Section(
                "",
                stripe_routes,
                always=(401, 413, 429),
                security=[{"stripeSignature": []}],
            ),
            # Any client: refused only for a body over the limit (the edge, before any
            # route) and a query out of bounds.
            Section("", public_routes, always=(413,), security=[]),
        ],
        errors=ERRORS,
        error_model=Error,
        components={"TimeZone": time_zones()},
        security_schemes={
            "adminKey": {
                "type": "http",
                "scheme": "bearer",
                "description": "TOLLHOUSE_ADMIN_KEY; unset: loopback clients only",
            },
            "webhookSignature": {
                "type": "apiKey",
                "in": "header",
                "name": "Tollhouse-Signature",
                "description": "t=<unix seconds>,v1=<hex HMAC-SHA256 of '<t>.<body>'> with "
                "TOLLHOUSE_INBOUND_WEBHOOK_SECRET (docs/alerts.md)",
            },
            "stripeSignature": {
                "type": "apiKey",
                "in": "header",
                "name": "Stripe-Signature",
                "description": "Stripe's webhook signature with TOLLHOUSE_STRIPE_WEBHOOK_SECRET, "
                "at most 300 s old (docs/stripe.md)",
            },
        },
        security=[{"adminKey": []}],
    )
