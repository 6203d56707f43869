"""Who may use the admin API (``/api/*``) and the operator endpoints.

With ``admin_key`` set, a request must carry it as a bearer token (compared in constant
time); failures are counted per client address and, past
``admin_failures_per_minute``, answered 429 until the minute is over.

With no admin key, the only credential is being on this machine, so more checks
stand in for one (``tollhouse serve`` also refuses a non-loopback bind, see ``cli``):

- the client address is loopback (proxy headers count only from ``trusted_proxies``),
  and the request carries no proxy headers (a same-host proxy makes everyone loopback);
- the ``Host`` is a loopback name or address (421 otherwise): a web page whose domain
  an attacker re-points at 127.0.0.1 (DNS rebinding) sends its own domain as ``Host``;
- a ``POST`` says ``Content-Type: application/json`` (415 otherwise) and any ``Origin``
  is loopback (403): a page on another site can send a form or a ``text/plain`` fetch to
  127.0.0.1 without asking, but not JSON, which makes the browser ask first (CORS).

``docs/security.md`` has the whole threat model.
"""

from __future__ import annotations

import hmac
import ipaddress
import time
from urllib.parse import urlsplit

from starlette.requests import Request

from tollhouse.config import Settings
from tollhouse.errors import (
    AuthenticationFailed,
    MisdirectedRequest,
    PermissionDenied,
    TooManyFailures,
    UnsupportedMediaType,
)
from tollhouse.web.routing import client_address

_LOOPBACK_NAMES = frozenset({"localhost", "localhost.", "ip6-localhost"})
_PROXY_HEADERS = ("forwarded", "x-forwarded-for", "x-real-ip", "x-forwarded-host")


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class FailureThrottle:
    """Failed credential checks per client address, in one-minute buckets.

    Per process: with N replicas an address gets N times the allowance, still far too
    few guesses for a 32-character key. The table is bounded; when full, the oldest
    minute's entries go first, and a full table of current entries is cleared (an
    attacker spraying addresses gains nothing that the key's length does not deny).
    """

    def __init__(self, per_minute: int, max_clients: int = 10_000) -> None:
        self._per_minute = per_minute
        self._max_clients = max_clients
        self._failures: dict[str, tuple[int, int]] = {}  # client -> (minute, count)

    def check(self, client: str, now: float | None = None) -> None:
        """Raise ``TooManyFailures`` while ``client`` is over its allowance."""
        now = time.time() if now is None else now
        minute = int(now // 60)
        entry = self._failures.get(client)
        if entry is not None and entry[0] == minute and entry[1] >= self._per_minute:
            retry = max(1, 60 - int(now % 60))
            raise TooManyFailures(
                f"too many failed authentication attempts from {client}; retry in {retry}s",
                headers={"retry-after": str(retry)},
            )

    def failed(self, client: str, now: float | None = None) -> None:
        now = time.time() if now is None else now
        minute = int(now // 60)
        entry = self._failures.get(client)
        count = entry[1] + 1 if entry is not None and entry[0] == minute else 1
        if entry is None and len(self._failures) >= self._max_clients:
            self._evict(minute)
        self._failures[client] = (minute, count)

    def _evict(self, minute: int) -> None:
        stale = [client for client, (when, _) in self._failures.items() if when != minute]
        for client in stale:
            del self._failures[client]
        if len(self._failures) >= self._max_clients:
            self._failures.clear()


def require_admin(request: Request, settings: Settings, throttle: FailureThrottle) -> None:
    """Raise unless ``request`` may use the admin API."""
    if settings.admin_key is None:
        require_local(request)
        return
    client = client_address(request)
    throttle.check(client)
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    expected = settings.admin_key.get_secret_value().encode()
    given = token.strip().encode("utf-8", "replace")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given, expected):
        throttle.failed(client)
        raise AuthenticationFailed("admin API: missing or wrong admin key (Bearer token)")


def require_local(request: Request, *, json_writes: bool = True) -> None:
    """The loopback rules that stand in for a credential while no admin key is set;
    ``json_writes=False`` for the dashboard, whose forms carry a CSRF token instead."""
    if not is_loopback(request.client.host if request.client else None):
        raise PermissionDenied(
            "the admin API answers loopback clients only while TOLLHOUSE_ADMIN_KEY is unset"
        )
    headers = request.headers
    if any(name in headers for name in _PROXY_HEADERS):
        # A reverse proxy on this host makes every client look local: its requests are
        # not the operator's, whatever their peer address says.
        raise PermissionDenied(
            "the admin API refuses proxied requests while TOLLHOUSE_ADMIN_KEY is unset: "
            "set an admin key to use it through a proxy"
        )
    host = headers.get("host")
    if host is not None and not is_loopback(_hostname(host)):
        raise MisdirectedRequest(
            f"the admin API answers Host localhost, 127.0.0.1 or [::1] only while "
            f"TOLLHOUSE_ADMIN_KEY is unset (got {host[:100]!r})"
        )
    origin = request.headers.get("origin")
    if origin is not None and not is_loopback(_origin_host(origin)):
        raise PermissionDenied(
            "the admin API refuses requests from other sites' pages while "
            "TOLLHOUSE_ADMIN_KEY is unset"
        )
    if json_writes and request.method == "POST":
        media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if media != "application/json":
            raise UnsupportedMediaType(
                "the admin API takes writes as Content-Type: application/json only"
            )


def _origin_host(origin: str) -> str | None:
    try:
        return urlsplit(origin).hostname
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return None


def _hostname(host: str) -> str:
    """``host`` without its port: ``[::1]:4000`` → ``::1``, ``localhost:4000`` → ``localhost``."""
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rpartition(":")[0] if host.count(":") == 1 else host
