"""Browser-facing hygiene for an API that lab pages may call: security headers on every
answer, and CORS for the origins the operator lists (docs/sandboxes.md, *Web*).

Wraps one ASGI app. A preflight (``OPTIONS`` with ``Access-Control-Request-Method``) from
an allowed origin is answered here with 204; from any other origin with 403, without
reaching the app. Other answers get ``Access-Control-Allow-Origin`` (and ``Vary:
Origin``) only when their request's origin is allowed; credentials are never allowed,
since the API authenticates with a bearer token, not cookies.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

SECURITY_HEADERS = (
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    ("content-security-policy", "default-src 'none'; frame-ancestors 'none'"),
    ("cache-control", "no-store"),
    ("cross-origin-resource-policy", "same-site"),
)
_ALLOWED_HEADERS = "authorization, content-type, x-track-id, idempotency-key"
_EXPOSED_HEADERS = "retry-after, location, x-request-id, x-tollhouse-applied-policies"


def origins(setting: str) -> frozenset[str]:
    return frozenset(o.strip().rstrip("/") for o in setting.split(",") if o.strip())


class Hygiene:
    def __init__(self, app: ASGIApp, allowed: Iterable[str], methods: str) -> None:
        self._app = app
        self._allowed = frozenset(allowed)
        self._methods = methods

    def _allows(self, origin: str | None) -> bool:
        return origin is not None and ("*" in self._allowed or origin in self._allowed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        preflight = scope["method"] == "OPTIONS" and "access-control-request-method" in headers
        if preflight:
            await self._preflight(origin, send)
            return
        allowed = self._allows(origin)

        async def secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                out = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS:
                    out.setdefault(name, value)
                if allowed:
                    out["access-control-allow-origin"] = origin or ""
                    out["access-control-expose-headers"] = _EXPOSED_HEADERS
                    out.add_vary_header("Origin")
            await send(message)

        await self._app(scope, receive, secured)

    async def _preflight(self, origin: str | None, send: Send) -> None:
        status = 204 if self._allows(origin) else 403
        raw = [(name.encode(), value.encode()) for name, value in SECURITY_HEADERS]
        if status == 204:
            raw += [
                (b"access-control-allow-origin", (origin or "").encode("latin-1")),
                (b"access-control-allow-methods", self._methods.encode()),
                (b"access-control-allow-headers", _ALLOWED_HEADERS.encode()),
                (b"access-control-max-age", b"600"),
                (b"vary", b"Origin"),
            ]
        raw.append((b"content-length", b"0"))
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": b""})
