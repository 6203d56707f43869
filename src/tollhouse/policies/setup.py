"""The engines a server has: CEL (the default) and Rego, embedded, always; an external
OPA when ``policy_opa_url`` is set (docs/policies.md, *Engines*). The OPA engine asks
over an HTTP session the caller owns and closes."""

from __future__ import annotations

import aiohttp

from tollhouse.config import Settings
from tollhouse.policies.cel import CelEngine
from tollhouse.policies.engines import PolicyEngine
from tollhouse.policies.opa import OpaEngine
from tollhouse.policies.rego import RegoEngine


def policy_engines(
    settings: Settings, session: aiohttp.ClientSession | None = None
) -> dict[str, PolicyEngine]:
    engines: dict[str, PolicyEngine] = {"cel": CelEngine(), "rego": RegoEngine()}
    if session is not None:
        opa = OpaEngine.from_settings(settings, session)
        if opa is not None:
            engines["opa"] = opa
    return engines


def opa_session(settings: Settings) -> aiohttp.ClientSession | None:
    """The session OPA is asked over, when one is configured (no redirects followed,
    no cookies kept: each decision stands alone)."""
    if settings.policy_opa_url is None:
        return None
    connector = aiohttp.TCPConnector(limit=100, ttl_dns_cache=300)
    return aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar())
