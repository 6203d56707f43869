"""``/ui``: the admin dashboard's routes, its login and its static files
(docs/dashboard.md). The pages live in one module per domain they show."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from tollhouse.dashboard import alerts as alert_pages
from tollhouse.dashboard import credits as credit_pages
from tollhouse.dashboard import keys, logs, overview, policies, sandboxes, scopes, sessions
from tollhouse.dashboard.access import (
    COOKIE_PATH,
    CSRF_FIELD,
    SESSION_COOKIE,
    check_login,
    check_write,
    is_secure,
    login_csrf,
    visitor,
)
from tollhouse.dashboard.pages import form_text, services
from tollhouse.dashboard.render import html, set_csrf_cookie
from tollhouse.errors import TollhouseError


def _next(target: str | None) -> str:
    """Where to go after the login: a dashboard path only (never another site)."""
    if target and target.startswith("/ui") and not target.startswith("//"):
        return target
    return "/ui"


async def login(request: Request) -> Response:
    sessions = services(request).dashboard_sessions
    target = _next(request.query_params.get("next"))
    if not sessions.required:
        return RedirectResponse(target, 303)  # no admin key: loopback is the admin
    token, fresh = login_csrf(request)
    error: str | None = None
    status = 200
    if request.method == "POST":
        form = await form_text(request)
        target = _next(form.get("next"))
        try:
            check_write(request, form.get(CSRF_FIELD), token)
            role = check_login(request, sessions, services(request).auth_throttle,
                               form.get("key", ""))  # fmt: skip
        except TollhouseError as exc:
            error, status = exc.message, exc.status_code
        else:
            signed_in = RedirectResponse(target, 303)
            signed_in.set_cookie(
                SESSION_COOKIE,
                sessions.issue(role),
                max_age=sessions.lifetime_s,
                path=COOKIE_PATH,
                httponly=True,
                samesite="strict",
                secure=is_secure(request),
            )
            return signed_in
    context = {"title": "Log in", "nav": "", "csrf": token, "next": target, "error": error}
    response = html(request, "login.html", context, None, status)
    if fresh:
        set_csrf_cookie(request, response, token)
    return response


async def logout(request: Request) -> Response:
    """Anyone signed in may log out (the viewer too): the form's token, no role check."""
    who = visitor(request, services(request).dashboard_sessions)
    if who is None:
        return RedirectResponse("/ui/login", 303)
    check_write(request, (await form_text(request)).get(CSRF_FIELD), who.csrf)
    response = RedirectResponse("/ui/login", 303)
    response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict")
    return response


def routes() -> list[BaseRoute]:
    return [
        Route("/ui", overview.overview, methods=["GET"]),
        Route("/ui/", lambda request: RedirectResponse("/ui", 308), methods=["GET"]),
        Route("/ui/login", login, methods=["GET", "POST"]),
        Route("/ui/logout", logout, methods=["POST"]),
        Route("/ui/logs", logs.log_page, methods=["GET"]),
        Route("/ui/logs/rows", logs.log_rows, methods=["GET"]),
        Route("/ui/logs.csv", logs.log_csv, methods=["GET"]),
        Route("/ui/logs/{id}", logs.log_detail, methods=["GET"]),
        Route("/ui/keys", keys.key_list, methods=["GET"]),
        Route("/ui/keys/new", keys.key_new, methods=["GET", "POST"]),
        Route("/ui/keys/{id}", keys.key_edit, methods=["GET", "POST"]),
        Route("/ui/keys/{id}/rotate", keys.key_rotate, methods=["POST"]),
        Route("/ui/keys/{id}/revoke", keys.key_revoke, methods=["POST"]),
        Route("/ui/keys/{id}/delete", keys.key_delete, methods=["POST"]),
        *scopes.routes(scopes.TEAMS),
        *scopes.routes(scopes.CUSTOMERS),
        *alert_pages.routes(),
        *credit_pages.routes(),
        Route("/ui/policies", policies.policy_list, methods=["GET"]),
        Route("/ui/policies/new", policies.policy_new, methods=["GET", "POST"]),
        Route("/ui/policies/{id}", policies.policy_edit, methods=["GET", "POST"]),
        Route("/ui/policies/{id}/enable", policies.policy_enable, methods=["POST"]),
        Route("/ui/policies/{id}/delete", policies.policy_delete, methods=["POST"]),
        Route("/ui/policies/{id}/test", policies.policy_test, methods=["POST"]),
        Route("/ui/sandboxes", sandboxes.sandbox_list, methods=["GET"]),
        Route("/ui/sandboxes/auto-expire", sandboxes.sandbox_auto_expire, methods=["POST"]),
        Route("/ui/sandboxes/cleanup", sandboxes.sandbox_cleanup, methods=["POST"]),
        Route("/ui/sandboxes/sync", sandboxes.sandbox_sync, methods=["POST"]),
        Route("/ui/sandboxes/{id:sandbox_id}/end", sandboxes.sandbox_end, methods=["POST"]),
        Route("/ui/sessions", sessions.session_list, methods=["GET"]),
        Route("/ui/sessions/{id}", sessions.session_page, methods=["GET"]),
        Route("/ui/sessions/{id}/stream", sessions.session_stream, methods=["GET"]),
        Mount(
            "/ui/static",
            StaticFiles(packages=[("tollhouse.dashboard", "static")]),
            name="ui-static",
        ),
    ]
