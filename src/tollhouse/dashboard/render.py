"""Templates to HTML answers: one Jinja2 environment, the filters pages format with, and
the headers every page carries (docs/dashboard.md, *Security*)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from tollhouse.dashboard.access import COOKIE_PATH, CSRF_COOKIE, Visitor, is_secure
from tollhouse.errors import TollhouseError
from tollhouse.money import format_usd

# No inline script or style runs: scripts and styles come from /ui/static only, and
# chart data travels in <script type="application/json"> blocks, which never execute.
PAGE_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "same-origin",
    "cache-control": "no-store",
}


def usd(value: Decimal | int | None) -> str:
    """Dollars for people: cents above a dollar, more digits below, never rounded to 0."""
    if value is None:
        return "—"
    amount = Decimal(value)
    if amount == 0:
        return "$0.00"
    if abs(amount) >= 1:
        return f"{'-' if amount < 0 else ''}${abs(amount):,.2f}"
    digits = f"{abs(amount):.9f}".rstrip("0")
    if len(digits.split(".")[1]) < 2:
        digits = f"{abs(amount):.2f}"
    return f"{'-' if amount < 0 else ''}${digits}"


def exact_usd(value: Decimal | None) -> str:
    """Every digit the ledger keeps, none it does not (``0.000000000`` is ``0``)."""
    return "—" if value is None else f"${format_usd(Decimal(value))}"


def count(value: int | float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


def when(value: datetime | None) -> str:
    if value is None:
        return "—"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def millis(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value:,.0f} ms" if value >= 100 else f"{value:.1f} ms"


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("tollhouse.dashboard", "templates"),
        autoescape=select_autoescape(["html"]),
        undefined=StrictUndefined,  # a misspelt variable is an error in the tests, not ""
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(usd=usd, exact_usd=exact_usd, count=count, when=when, millis=millis)
    return env


ENV = _environment()


def html(
    request: Request,
    template: str,
    context: Mapping[str, Any],
    visitor: Visitor | None,
    status: int = 200,
) -> Response:
    """``template`` rendered for ``visitor``, with the page headers and, for a visitor
    without one yet, the double-submit CSRF cookie."""
    body = ENV.get_template(template).render(request=request, visitor=visitor, **context)
    response = HTMLResponse(body, status, headers=PAGE_HEADERS)
    if visitor is not None and visitor.fresh_csrf:
        set_csrf_cookie(request, response, visitor.csrf)
    return response


def set_csrf_cookie(request: Request, response: Response, token: str) -> None:
    response.set_cookie(
        CSRF_COOKIE,
        token,
        path=COOKIE_PATH,
        httponly=True,
        samesite="strict",
        secure=is_secure(request),
    )


def error_page(request: Request, exc: TollhouseError) -> Response:
    """A refusal on a dashboard page, as a page (the API's are JSON)."""
    context = {"error": exc, "title": f"{exc.status_code}"}
    body = ENV.get_template("error.html").render(request=request, visitor=None, **context)
    return HTMLResponse(body, exc.status_code, headers={**PAGE_HEADERS, **exc.headers})
