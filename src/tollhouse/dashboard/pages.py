"""What every dashboard page shares: the services it reads, the gate in front of it
(login, CSRF, the viewer's read-only role) and the names it shows instead of ids."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from tollhouse.config import Settings
from tollhouse.dashboard.access import (
    CSRF_FIELD,
    CSRF_HEADER,
    Sessions,
    Visitor,
    check_write,
    visitor,
)
from tollhouse.errors import PermissionDenied
from tollhouse.web.services import FailureCounter

if TYPE_CHECKING:
    from tollhouse.admission.snapshot import ScopeKind, Snapshot


class Governed(Protocol):
    """The admission engine, as far as pages read it: the snapshot of names and limits,
    and ``reload`` after a write (the gateway applies it before the page answers)."""

    @property
    def snapshot(self) -> Snapshot: ...

    async def reload(self) -> None: ...


class DashboardServices(Protocol):
    """What the dashboard uses of the running service (``web/services.py``)."""

    @property
    def settings(self) -> Settings: ...

    @property
    def engine(self) -> AsyncEngine: ...

    @property
    def admission(self) -> Governed: ...

    @property
    def auth_throttle(self) -> FailureCounter: ...

    @property
    def dashboard_sessions(self) -> Sessions: ...


def services(request: Request) -> DashboardServices:
    found: DashboardServices = request.app.services
    return found


Handler = Callable[[Request, Visitor], Awaitable[Response]]


def page(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """``handler`` behind the gate: a visitor who must log in is sent to the login page;
    a ``POST`` must carry the form's CSRF token and come from an admin (viewers read)."""
    return _gated(handler, viewers_post=False)


def asking(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """``page`` for a form that asks and changes nothing (a policy's dry run): viewers
    may post it too; the CSRF token is still required."""
    return _gated(handler, viewers_post=True)


def _gated(handler: Handler, *, viewers_post: bool) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        who = visitor(request, services(request).dashboard_sessions)
        if who is None:
            return to_login(request)
        if request.method == "POST":
            form = await request.form()
            given = _text(form, CSRF_FIELD) or request.headers.get(CSRF_HEADER)
            check_write(request, given, who.csrf)
            if not who.can_write and not viewers_post:
                raise PermissionDenied("read-only: the viewer key can look, not change")
        return await handler(request, who)

    endpoint.__name__ = handler.__name__
    endpoint.__doc__ = handler.__doc__
    return endpoint


def to_login(request: Request) -> Response:
    wanted = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    target = f"/ui/login?next={quote(wanted, safe='')}"
    if request.headers.get("hx-request"):
        # htmx swaps a fragment; a whole login page inside it would be wrong.
        return Response(status_code=204, headers={"hx-redirect": target})
    return RedirectResponse(target, 303)


def _text(form: FormData, name: str) -> str | None:
    value = form.get(name)
    return value if isinstance(value, str) else None


async def form_text(request: Request) -> dict[str, str]:
    """The posted form's text fields (files are not taken), blanks kept."""
    form = await request.form()
    return {name: value for name, value in form.multi_items() if isinstance(value, str)}


class Names:
    """Names for ids, from the admission snapshot (in memory: no query per row). An id
    the snapshot does not know (deleted since) shows as such, never as a blank."""

    def __init__(self, snapshot: Snapshot) -> None:
        self._scopes = snapshot.scopes

    def of(self, kind: ScopeKind, entity_id: str | None) -> str:
        if not entity_id:
            return "—"
        scope = self._scopes.get((kind, entity_id))
        return scope.name if scope is not None else f"deleted {kind} {entity_id[:8]}…"

    def choices(self, kind: ScopeKind) -> list[tuple[str, str]]:
        """``(id, name)`` of every entity of a kind, by name: the pickers."""
        found = [(s.id, s.name) for (k, _), s in self._scopes.items() if k == kind]
        return sorted(found, key=lambda pair: (pair[1].lower(), pair[0]))

    def known(self, kind: ScopeKind, entity_id: str) -> bool:
        return (kind, entity_id) in self._scopes


def names(request: Request) -> Names:
    return Names(services(request).admission.snapshot)


def query_without(request: Request, *drop: str, **put: Any) -> str:
    """The page's query string with ``drop`` removed and ``put`` set (links that change
    one filter and keep the rest)."""
    items = [
        (k, v) for k, v in request.query_params.multi_items() if k not in drop and k not in put
    ]
    items += [(k, str(v)) for k, v in put.items() if v not in (None, "")]
    return "&".join(f"{quote(k)}={quote(v, safe='')}" for k, v in items)
