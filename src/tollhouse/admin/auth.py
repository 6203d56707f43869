"""Admin authentication for ``/api/*`` (DESIGN §6).

With ``admin_key`` set, requests must carry it as a bearer token (compared in constant
time). With none set, only loopback clients are answered, and ``tollhouse serve``
refuses to listen on a non-loopback address (see ``cli.py``).
"""

from __future__ import annotations

import hmac
import ipaddress

from starlette.requests import Request

from tollhouse.config import Settings
from tollhouse.errors import AuthenticationFailed, PermissionDenied


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def require_admin(request: Request, settings: Settings) -> None:
    """Raise unless ``request`` may use the admin API."""
    if settings.admin_key is None:
        client = request.client.host if request.client else None
        if not is_loopback(client):
            raise PermissionDenied(
                "the admin API answers loopback clients only while TOLLHOUSE_ADMIN_KEY is unset"
            )
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    expected = settings.admin_key.get_secret_value().encode()
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected):
        raise AuthenticationFailed("admin API: missing or wrong admin key (Bearer token)")
