"""Who may see and change what through /ui: the login, the session cookie, CSRF, the
viewer's read-only role, and the loopback rules without an admin key."""

from __future__ import annotations

import time

import httpx
import pytest
from tests.dashboard.conftest import ADMIN_KEY, VIEWER_KEY, csrf_of, log_in

from tollhouse.app import create_app
from tollhouse.dashboard.access import SESSION_COOKIE, Sessions


async def test_pages_send_a_visitor_without_a_session_to_the_login(ui):
    for path in ("/ui", "/ui/logs?status=error", "/ui/keys"):
        response = await ui.get(path)
        assert response.status_code == 303
        assert response.headers["location"].startswith("/ui/login?next=%2Fui")
    fragment = await ui.get("/ui/logs/rows", headers={"hx-request": "true"})
    assert fragment.status_code == 204
    assert fragment.headers["hx-redirect"].startswith("/ui/login?next=")


async def test_login_sets_a_strict_httponly_session_cookie_and_logout_ends_it(ui):
    response = await log_in(ui)
    assert response.status_code == 303 and response.headers["location"] == "/ui/keys"
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{SESSION_COOKIE}=")
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/ui" in cookie
    assert "Secure" not in cookie  # plain HTTP here; see the TLS test
    page = await ui.get("/ui/keys")
    assert page.status_code == 200 and 'data-testid="role">admin<' in page.text
    out = await ui.post("/ui/logout", data={"csrf": csrf_of(page.text)})
    assert out.status_code == 303
    assert (await ui.get("/ui/keys")).status_code == 303


async def test_a_wrong_key_is_refused_on_the_page_and_counted(ui, ui_app):
    page = await ui.get("/ui/login")
    token = csrf_of(page.text)
    for _ in range(ui_app.services.settings.admin_failures_per_minute):
        wrong = await ui.post("/ui/login", data={"csrf": token, "key": "x" * 40})
        assert wrong.status_code == 401 and "wrong key" in wrong.text
        assert SESSION_COOKIE not in wrong.headers.get("set-cookie", "")
    throttled = await ui.post("/ui/login", data={"csrf": token, "key": ADMIN_KEY})
    assert throttled.status_code == 429


async def test_the_login_form_needs_its_csrf_token(ui):
    await ui.get("/ui/login")
    response = await ui.post("/ui/login", data={"csrf": "forged-token-123456789", "key": ADMIN_KEY})
    assert response.status_code == 403 and "CSRF" in response.text


async def test_login_goes_back_only_to_a_dashboard_page(ui):
    page = await ui.get("/ui/login")
    for target, expected in (("//evil.example/x", "/ui"), ("https://evil.example", "/ui"),
                             ("/ui/logs?status=error", "/ui/logs?status=error")):  # fmt: skip
        form = {"csrf": csrf_of(page.text), "key": ADMIN_KEY, "next": target}
        response = await ui.post("/ui/login", data=form)
        assert response.headers["location"] == expected


async def test_writes_need_the_csrf_token_and_our_origin(ui):
    await log_in(ui)
    page = await ui.get("/ui/keys/new")
    token = csrf_of(page.text)
    form = {"name": "k1", "is_active": "on"}
    assert (await ui.post("/ui/keys/new", data=form)).status_code == 403
    forged = await ui.post("/ui/keys/new", data={**form, "csrf": "nope" * 8})
    assert forged.status_code == 403
    elsewhere = await ui.post(
        "/ui/keys/new", data={**form, "csrf": token}, headers={"origin": "https://evil.example"}
    )
    assert elsewhere.status_code == 403
    made = await ui.post("/ui/keys/new", data={**form, "csrf": token})
    assert made.status_code == 200 and 'data-testid="key-value"' in made.text
    # htmx sends the token as a header
    keys = await ui.get("/ui/keys")
    assert "k1" in keys.text


async def test_the_viewer_sees_everything_and_changes_nothing(ui, ui_app):
    admin_view = await log_in(ui)
    assert admin_view.status_code == 303
    page = await ui.get("/ui/keys/new")
    made = await ui.post("/ui/keys/new", data={"csrf": csrf_of(page.text), "name": "mine"})
    key_id = made.text.split('href="/ui/keys/')[1].split('"')[0]
    ui.cookies.clear()
    assert (await log_in(ui, VIEWER_KEY)).status_code == 303
    keys = await ui.get("/ui/keys")
    assert keys.status_code == 200 and "mine" in keys.text
    assert 'data-testid="role">viewer<' in keys.text and "key-new" not in keys.text
    edit = await ui.get(f"/ui/keys/{key_id}")
    assert "<fieldset disabled>" in edit.text and "key-rotate" not in edit.text
    token = csrf_of(edit.text)
    for path in (f"/ui/keys/{key_id}/rotate", f"/ui/keys/{key_id}/revoke",
                 f"/ui/keys/{key_id}/delete", "/ui/keys/new"):  # fmt: skip
        refused = await ui.post(path, data={"csrf": token, "name": "x"})
        assert refused.status_code == 403 and "read-only" in refused.text
    # The viewer may log out, though
    assert (await ui.post("/ui/logout", data={"csrf": token})).status_code == 303


async def test_a_session_cookie_cannot_be_forged_stretched_or_outlive_a_key_change(
    ui, ui_app, make_settings
):
    sessions: Sessions = ui_app.services.dashboard_sessions
    good = sessions.issue("viewer")
    assert sessions.read(good) is not None
    body, signature = good.split(".")
    assert sessions.read(f"{body}.{signature[:-2]}AA") is None
    assert sessions.read(good.replace(".", "..")) is None
    assert sessions.read("") is None and sessions.read("garbage") is None
    assert sessions.read(good, now=time.time() + sessions.lifetime_s + 1) is None
    # Promoting oneself: a payload saying admin under the viewer's signature.
    import base64
    import json

    payload = json.loads(base64.urlsafe_b64decode(body + "=="))
    payload["r"] = "admin"
    forged = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode().rstrip("=")
    assert sessions.read(f"{forged}.{signature}") is None
    other_admin = "another-admin-key-" + "b" * 30
    rotated = Sessions(make_settings(admin_key=other_admin, viewer_key=VIEWER_KEY))
    assert rotated.read(good) is None
    ui.cookies.set(SESSION_COOKIE, good, path="/ui")
    page = await ui.get("/ui/keys")
    assert page.status_code == 200 and 'data-testid="role">viewer<' in page.text


async def test_over_tls_the_cookie_is_secure(ui_app):
    transport = httpx.ASGITransport(app=ui_app, client=("127.0.0.1", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="https://127.0.0.1") as client:
        response = await log_in(client)
    assert "Secure" in response.headers["set-cookie"]


async def test_pages_carry_a_strict_content_security_policy(ui):
    await log_in(ui)
    page = await ui.get("/ui/keys")
    policy = page.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["cache-control"] == "no-store"


async def test_without_an_admin_key_loopback_is_the_admin_and_others_are_refused(make_settings):
    app = create_app(make_settings())
    async with app.router.lifespan_context(app):
        local = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(transport=local, base_url="http://127.0.0.1") as client:
            page = await client.get("/ui/keys")
            assert page.status_code == 200 and 'data-testid="role">admin<' in page.text
            assert "logout" not in page.text
            assert (await client.get("/ui/login")).status_code == 303
            # Forms carry the double-submit token set as a cookie with the page.
            token = csrf_of((await client.get("/ui/keys/new")).text)
            made = await client.post("/ui/keys/new", data={"csrf": token, "name": "local"})
            assert made.status_code == 200
            stale = await client.post("/ui/keys/new", data={"csrf": "x" * 32, "name": "no"})
            assert stale.status_code == 403
            rebound = await client.get("/ui/keys", headers={"host": "evil.example"})
            assert rebound.status_code == 421
            proxied = await client.get("/ui/keys", headers={"x-forwarded-for": "203.0.113.9"})
            assert proxied.status_code == 403
        remote = httpx.ASGITransport(app=app, client=("203.0.113.9", 50000))
        async with httpx.AsyncClient(transport=remote, base_url="http://127.0.0.1") as client:
            refused = await client.get("/ui/keys")
            assert refused.status_code == 403 and "text/html" in refused.headers["content-type"]


async def test_the_dashboard_can_be_turned_off(make_settings):
    app = create_app(make_settings(dashboard_enabled=False))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            assert (await client.get("/ui")).status_code == 404
            assert (await client.get("/ui/static/app.css")).status_code == 404


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"viewer_key": VIEWER_KEY}, "viewer_key needs admin_key"),
        ({"admin_key": ADMIN_KEY, "viewer_key": ADMIN_KEY}, "must differ"),
        ({"admin_key": ADMIN_KEY, "viewer_key": "short"}, "at least 32"),
    ],
)
def test_viewer_key_settings_are_checked_at_start(make_settings, overrides, message):
    from tollhouse.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        make_settings(**overrides)
