"""Who may use the admin API and the operator endpoints (``tollhouse.admin.auth``)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
import pytest
from starlette.applications import Starlette
from tests.support import LiveServer

from tollhouse.admin.auth import FailureThrottle
from tollhouse.app import create_app
from tollhouse.errors import TooManyFailures

ADMIN_KEY = "admin-key-0123456789abcdefghijklmnopq"
CUSTOMERS = "/api/governance/customers"


@contextlib.asynccontextmanager
async def client_for(
    app: Starlette, client: tuple[str, int] = ("127.0.0.1", 1), host: str = "127.0.0.1"
) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=client)
        async with httpx.AsyncClient(transport=transport, base_url=f"http://{host}") as c:
            yield c


def error_code(response: httpx.Response) -> str:
    body = response.json()
    assert set(body) == {"error", "code"}, body
    return str(body["code"])


# --- keyless: loopback, Host, CSRF -------------------------------------------------------


@pytest.mark.parametrize("host", ["evil.example", "evil.example:4000", "127.0.0.1.nip.io",
                                  "10.0.0.1", "[2001:db8::1]:4000"])  # fmt: skip
async def test_keyless_admin_api_refuses_a_foreign_host(make_settings, host):
    async with client_for(create_app(make_settings())) as client:
        response = await client.get(CUSTOMERS, headers={"host": host})
    assert response.status_code == 421
    assert error_code(response) == "misdirected_request"


@pytest.mark.parametrize("host", ["localhost", "localhost:4000", "127.0.0.1:4000",
                                  "[::1]:4000", "127.3.4.5"])  # fmt: skip
async def test_keyless_admin_api_answers_loopback_hosts(make_settings, host):
    async with client_for(create_app(make_settings())) as client:
        response = await client.get(CUSTOMERS, headers={"host": host})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/jsonx",
    ],  # fmt: skip
)
async def test_keyless_admin_writes_need_json(make_settings, content_type):
    headers = {"content-type": content_type} if content_type else {}
    async with client_for(create_app(make_settings())) as client:
        response = await client.post(CUSTOMERS, content=b'{"name": "acme"}', headers=headers)
        assert response.status_code == 415
        assert error_code(response) == "unsupported_media_type"
        listed = await client.get(CUSTOMERS)
    assert listed.json()["count"] == 0  # nothing was written


async def test_keyless_admin_json_write_with_charset_is_fine(make_settings):
    async with client_for(create_app(make_settings())) as client:
        response = await client.post(
            CUSTOMERS,
            content=b'{"name": "acme"}',
            headers={"content-type": "Application/JSON; charset=utf-8"},
        )
    assert response.status_code == 201, response.text


@pytest.mark.parametrize("origin", ["https://evil.example", "null", "http://[::1"])
async def test_keyless_admin_api_refuses_other_sites_pages(make_settings, origin):
    async with client_for(create_app(make_settings())) as client:
        response = await client.post(CUSTOMERS, json={"name": "acme"}, headers={"origin": origin})
    assert response.status_code == 403


async def test_keyless_admin_api_accepts_a_loopback_origin(make_settings):
    async with client_for(create_app(make_settings())) as client:
        response = await client.post(
            CUSTOMERS, json={"name": "acme"}, headers={"origin": "http://localhost:4000"}
        )
    assert response.status_code == 201, response.text


@pytest.mark.parametrize("header", ["x-forwarded-for", "forwarded", "x-real-ip"])
def test_keyless_admin_api_refuses_proxied_requests(make_settings, header):
    # A reverse proxy on this host connects from loopback for every internet client.
    with LiveServer(make_settings()) as server:
        response = httpx.get(f"{server.url}{CUSTOMERS}", headers={header: "203.0.113.9"})
        assert response.status_code == 403
        assert "proxied" in response.json()["error"]
        assert httpx.get(f"{server.url}{CUSTOMERS}").status_code == 200


def test_forwarded_for_is_ignored_unless_the_proxy_is_trusted(make_settings):
    # Without trusted_proxies, a client cannot claim another address: the throttle (keyed
    # by address) counts both "clients" below as the one loopback peer they really are.
    settings = make_settings(admin_key=ADMIN_KEY, admin_failures_per_minute=2)
    with LiveServer(settings) as server:
        for claimed in ("203.0.113.1", "203.0.113.2"):
            response = httpx.get(f"{server.url}{CUSTOMERS}", headers={"x-forwarded-for": claimed})
            assert response.status_code == 401
        third = httpx.get(f"{server.url}{CUSTOMERS}", headers={"x-forwarded-for": "203.0.113.3"})
        assert third.status_code == 429


def test_a_trusted_proxy_forwards_the_client_address(make_settings):
    settings = make_settings(
        admin_key=ADMIN_KEY, admin_failures_per_minute=2, trusted_proxies="127.0.0.1"
    )
    with LiveServer(settings) as server:
        for claimed in ("203.0.113.1", "203.0.113.2", "203.0.113.3"):
            response = httpx.get(f"{server.url}{CUSTOMERS}", headers={"x-forwarded-for": claimed})
            assert response.status_code == 401  # each its own allowance


# --- with an admin key -------------------------------------------------------------------


async def test_an_empty_bearer_token_is_not_the_admin_key(make_settings):
    async with client_for(create_app(make_settings(admin_key=ADMIN_KEY))) as client:
        for header in ("Bearer ", "Bearer", "Bearer  ", "bearer \x00", "Bearer é".encode()):
            response = await client.get(CUSTOMERS, headers={"authorization": header})
            assert response.status_code == 401, header


async def test_with_a_key_foreign_hosts_and_non_json_are_the_routes_business(make_settings):
    # The bearer key is the credential: a browser never sends it by itself.
    auth = {"authorization": f"Bearer {ADMIN_KEY}", "host": "gateway.example"}
    async with client_for(create_app(make_settings(admin_key=ADMIN_KEY)),
                          client=("10.0.0.7", 1)) as client:  # fmt: skip
        response = await client.post(CUSTOMERS, json={"name": "acme"}, headers=auth)
    assert response.status_code == 201, response.text


async def test_failed_admin_keys_are_throttled_per_address(make_settings):
    app = create_app(make_settings(admin_key=ADMIN_KEY, admin_failures_per_minute=3))
    wrong = {"authorization": "Bearer wrong"}
    right = {"authorization": f"Bearer {ADMIN_KEY}"}
    async with client_for(app, client=("10.0.0.7", 1)) as attacker:
        for _ in range(3):
            assert (await attacker.get(CUSTOMERS, headers=wrong)).status_code == 401
        blocked = await attacker.get(CUSTOMERS, headers=right)
        assert blocked.status_code == 429
        assert error_code(blocked) == "too_many_failures"
        assert 1 <= int(blocked.headers["retry-after"]) <= 60
    async with client_for(app, client=("10.0.0.8", 1)) as operator:
        assert (await operator.get(CUSTOMERS, headers=right)).status_code == 200


def test_the_throttle_forgets_after_the_minute_and_stays_bounded():
    throttle = FailureThrottle(per_minute=2, max_clients=100)
    for _ in range(2):
        throttle.failed("a", now=60.0)
    with pytest.raises(TooManyFailures):
        throttle.check("a", now=61.0)
    throttle.check("a", now=120.0)  # the next minute
    for i in range(1000):
        throttle.failed(f"spray-{i}", now=180.0)
    assert len(throttle._failures) <= 100


# --- operator endpoints ------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/metrics", "/health"])
async def test_operator_endpoints_follow_the_admin_rule(make_settings, path):
    app = create_app(make_settings(admin_key=ADMIN_KEY))
    async with client_for(app, client=("10.0.0.7", 1)) as client:
        assert (await client.get(path)).status_code == 401
        authorised = await client.get(path, headers={"authorization": f"Bearer {ADMIN_KEY}"})
        assert authorised.status_code == 200
        # Load balancers' probes stay open.
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).status_code == 200


@pytest.mark.parametrize("path", ["/metrics", "/health"])
async def test_operator_endpoints_can_be_made_public(make_settings, path):
    app = create_app(make_settings(admin_key=ADMIN_KEY, ops_public=True))
    async with client_for(app, client=("10.0.0.7", 1)) as client:
        assert (await client.get(path)).status_code == 200
