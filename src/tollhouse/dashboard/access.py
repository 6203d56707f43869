"""Who may see the dashboard, and who may change things through it (docs/dashboard.md).

With ``admin_key`` set, a visitor logs in with the admin key (role ``admin``) or the
``viewer_key`` (role ``viewer``, read-only) and receives a session cookie: the role and
an expiry, signed with a key derived from both credentials, so that changing either ends
every session at once. The cookie is ``HttpOnly`` (no script reads it), ``SameSite=Strict``
(no other site's page sends it) and ``Secure`` when the request came over TLS.

With no admin key, the dashboard follows the admin API's loopback rules
(``admin/auth.py``): loopback clients only, no proxy headers, a loopback ``Host`` and
``Origin``; the visitor is the admin and there is no login.

Every form carries a CSRF token. With a session it is derived from the session's nonce
(a page of another site can neither read it nor make it); before a login, and without an
admin key, it is a random value also set as a cookie (double submit). A write must carry
the token, and any ``Origin`` it has must be this server's.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from starlette.requests import Request

from tollhouse.admin.auth import require_local
from tollhouse.config import Settings
from tollhouse.errors import AuthenticationFailed, PermissionDenied
from tollhouse.web.routing import client_address
from tollhouse.web.services import FailureCounter

Role = Literal["admin", "viewer"]
SESSION_COOKIE = "tollhouse_session"
CSRF_COOKIE = "tollhouse_csrf"
CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"  # htmx sends the token as a header (``hx-headers`` on body)
COOKIE_PATH = "/ui"


@dataclass(frozen=True, slots=True)
class Visitor:
    """Who is looking: their role and the CSRF token their forms carry. ``fresh_csrf``:
    a double-submit token to set as a cookie with the answer (none was sent)."""

    role: Role
    csrf: str
    fresh_csrf: bool = False
    signed_in: bool = False  # False: no admin key, loopback is the admin

    @property
    def can_write(self) -> bool:
        return self.role == "admin"


class Sessions:
    """Signs and reads session cookies; one per app, built from ``Settings``."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self.required = settings.admin_key is not None
        self._lifetime = int(settings.dashboard_session_hours * 3600)
        admin = settings.admin_key.get_secret_value() if settings.admin_key else ""
        viewer = settings.viewer_key.get_secret_value() if settings.viewer_key else ""
        material = f"tollhouse dashboard session\x00{viewer}".encode()
        self._key = hmac.new(admin.encode(), material, hashlib.sha256).digest()

    @property
    def lifetime_s(self) -> int:
        return self._lifetime

    def role_of(self, credential: str) -> Role | None:
        """The role a login credential gives, compared in constant time."""
        given = credential.strip().encode("utf-8", "replace")
        found: Role | None = None
        for role, secret in (
            ("admin", self._settings.admin_key),
            ("viewer", self._settings.viewer_key),
        ):
            if secret is not None and hmac.compare_digest(
                given, secret.get_secret_value().encode()
            ):
                found = role  # type: ignore[assignment]
        return found

    def issue(self, role: Role, now: float | None = None) -> str:
        now = time.time() if now is None else now
        payload = {"r": role, "e": int(now) + self._lifetime, "n": secrets.token_urlsafe(16)}
        body = _b64(json.dumps(payload, separators=(",", ":")).encode())
        return f"{body}.{_b64(self._sign(body.encode()))}"

    def read(self, cookie: str | None, now: float | None = None) -> tuple[Role, str] | None:
        """``(role, nonce)`` of a valid, unexpired cookie; ``None`` otherwise."""
        if not cookie or cookie.count(".") != 1:
            return None
        body, _, signature = cookie.partition(".")
        try:
            if not hmac.compare_digest(_unb64(signature), self._sign(body.encode())):
                return None
            payload = json.loads(_unb64(body))
            role, expires, nonce = payload["r"], int(payload["e"]), str(payload["n"])
        except (ValueError, KeyError, TypeError):
            return None
        now = time.time() if now is None else now
        if role not in ("admin", "viewer") or expires <= now:
            return None
        return role, nonce

    def csrf_for(self, nonce: str) -> str:
        return _b64(self._sign(f"csrf\x00{nonce}".encode()))

    def _sign(self, data: bytes) -> bytes:
        return hmac.new(self._key, data, hashlib.sha256).digest()


def visitor(request: Request, sessions: Sessions) -> Visitor | None:
    """The visitor of a page, or ``None`` when they must log in first. Without an admin
    key, a client the loopback rules refuse gets their error (403, 421)."""
    if not sessions.required:
        require_local(request, json_writes=False)
        token = request.cookies.get(CSRF_COOKIE) or ""
        if len(token) < 20:
            return Visitor("admin", secrets.token_urlsafe(24), fresh_csrf=True)
        return Visitor("admin", token)
    session = sessions.read(request.cookies.get(SESSION_COOKIE))
    if session is None:
        return None
    role, nonce = session
    return Visitor(role, sessions.csrf_for(nonce), signed_in=True)


def login_csrf(request: Request) -> tuple[str, bool]:
    """The login form's double-submit token, and whether it is new (to set as a cookie)."""
    token = request.cookies.get(CSRF_COOKIE) or ""
    if len(token) < 20:
        return secrets.token_urlsafe(24), True
    return token, False


def check_write(request: Request, given: str | None, expected: str) -> None:
    """A form post: its CSRF token and its ``Origin`` (when sent) must be ours."""
    origin = request.headers.get("origin")
    if origin is not None and origin != "null":
        host = request.headers.get("host", "")
        if urlsplit(origin).netloc != host:
            raise PermissionDenied("the dashboard refuses writes from other sites' pages")
    if not given or not hmac.compare_digest(given.encode(), expected.encode()):
        raise PermissionDenied(
            "the form's CSRF token is missing or stale: reload the page and try again"
        )


def check_login(
    request: Request, sessions: Sessions, throttle: FailureCounter, credential: str
) -> Role:
    """The role a login gives; failures count against the client like the admin API's."""
    client = client_address(request)
    throttle.check(client)
    role = sessions.role_of(credential)
    if role is None:
        throttle.failed(client)
        raise AuthenticationFailed("wrong key: use the admin key or the viewer key")
    return role


def is_secure(request: Request) -> bool:
    """Served over TLS, as the server or a trusted proxy says (uvicorn's proxy headers)."""
    return request.url.scheme == "https"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
