"""Bodies are bounded, and refused before they are read when the caller has no right.

Real server, real bytes: the live gateway is uvicorn with the production configuration
(``tollhouse.web.server.server_config``), driven over raw sockets so a test can send a
request head and see the answer before sending a byte of the body.
"""

from __future__ import annotations

import json

import httpx
import pytest
from tests.support import LiveServer
from tests.web.rawhttp import connect, head, read_response, send_ignoring_close

from tollhouse.alerts.signing import sign
from tollhouse.app import create_app
from tollhouse.errors import InvalidJSON
from tollhouse.web.bodies import check_surrogates

CHAT = "/v1/chat/completions"
SECRET = "inbound-secret-0123456789abcdefghijkl"
MB = 1024 * 1024


@pytest.fixture
def governed(make_settings):
    """A gateway that requires a virtual key (no anonymous use)."""
    with LiveServer(
        make_settings(allow_anonymous=False, inbound_webhook_secret=SECRET, max_request_body_mb=2)
    ) as server:
        yield server


@pytest.mark.parametrize("path", [CHAT, "/v1/messages", "/v1/embeddings", "/chat/completions"])
def test_a_request_without_a_key_is_refused_before_its_body_is_sent(governed, path):
    sock = connect(governed.port)
    with sock:
        sock.sendall(head("POST", path, {"content-type": "application/json",
                                         "content-length": str(MB)}))  # fmt: skip
        status, headers, body = read_response(sock)
    assert status == 401
    # The rest of the body is not read: the connection closes instead.
    assert headers["connection"] == "close"
    assert json.loads(body)["error" if path != "/v1/messages" else "type"]


def test_a_declared_length_past_the_limit_is_413_before_the_body(governed):
    sock = connect(governed.port)
    with sock:
        sock.sendall(head("POST", CHAT, {"authorization": "Bearer th-whatever",
                                         "content-length": str(100 * MB)}))  # fmt: skip
        status, headers, body = read_response(sock)
    assert status == 413
    assert headers["connection"] == "close"
    error = json.loads(body)["error"]
    assert error["code"] == "payload_too_large" and "2 MB" in error["message"]


def test_a_chunked_body_past_the_limit_is_413(make_settings):
    with LiveServer(make_settings(max_request_body_mb=1)) as server:
        sock = connect(server.port)
        with sock:
            sock.sendall(head("POST", CHAT, {"transfer-encoding": "chunked"}))
            chunk = b"x" * (256 * 1024)
            frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
            send_ignoring_close(sock, frame * 8)
            status, headers, body = read_response(sock)
    assert status == 413
    assert json.loads(body)["error"]["code"] == "payload_too_large"


def test_a_body_within_the_limit_is_served(make_settings):
    with LiveServer(make_settings(max_request_body_mb=1)) as server:
        padding = "x" * (900 * 1024)
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": padding}]}
        response = httpx.post(f"{server.url}{CHAT}", json=body, timeout=10)
    assert response.status_code == 200, response.text


def test_an_unsigned_webhook_is_refused_before_its_body_is_sent(governed):
    sock = connect(governed.port)
    with sock:
        sock.sendall(head("POST", "/api/webhooks/budget", {"content-length": str(MB)}))
        status, headers, body = read_response(sock)
    assert status == 401
    assert headers["connection"] == "close"
    assert json.loads(body)["code"] == "invalid_signature"


def test_a_signed_webhook_with_a_stale_stamp_is_refused_before_its_body(governed):
    stale = sign(SECRET, b"{}", timestamp=1_000_000_000)
    sock = connect(governed.port)
    with sock:
        sock.sendall(head("POST", "/api/webhooks/budget",
                          {"content-length": str(MB), "tollhouse-signature": stale}))  # fmt: skip
        status, _, body = read_response(sock)
    assert status == 401 and "stale" in json.loads(body)["error"]


@pytest.mark.parametrize("depth", [129, 256, 300, 1000, 1023, 5000])
async def test_json_nested_too_deep_is_400(gateway, depth):
    nested = "[" * depth + "]" * depth
    raw = ('{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], '
           f'"metadata": {nested}}}').encode()  # fmt: skip
    response = await gateway.post(CHAT, content=raw)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_json"


async def test_json_nested_to_the_bound_is_served(gateway):
    # The body object is level 1; 126 more levels of lists inside "x" reach 128.
    nested = "[" * 126 + "]" * 126
    raw = ('{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], '
           f'"metadata": {{"x": {nested}}}}}').encode()  # fmt: skip
    response = await gateway.post(CHAT, content=raw)
    # Past the depth check: what the upstream makes of the field is its business.
    assert response.status_code != 400 or response.json()["error"]["code"] != "invalid_json"


@pytest.mark.parametrize(
    "path",
    [
        "/v1/models?x=%00",
        "/api/usage?key_id=%00",
        "/api/governance/customers/%00",
        "/api/governance/teams?customer_id=a%00b",
        "/v1/chat%00/completions",
    ],
)
async def test_nul_bytes_in_path_or_query_are_400(make_settings, both_stores, path):
    # Postgres refuses NUL in text with an error: it must never get that far.
    app = create_app(make_settings(**both_stores))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            response = await client.get(path)
    assert response.status_code == 400, response.text
    assert "NUL byte" in response.text


def test_a_client_that_sends_its_whole_body_first_still_reads_the_refusal(governed):
    # Most HTTP clients (httpx, requests, the SDKs) send the whole body before reading:
    # the server must not reset the connection under them (a lingering close).
    body = b'{"model": "gpt-4o-mini", "messages": []}' + b" " * (8 * MB)
    response = httpx.post(f"{governed.url}{CHAT}", content=body, timeout=10)
    assert response.status_code == 413
    unkeyed = httpx.post(f"{governed.url}{CHAT}", content=body[: MB + 100], timeout=10)
    assert unkeyed.status_code == 401


@pytest.mark.parametrize(
    ("raw", "refused"),
    [
        (rb'{"name": "\ud800"}', True),
        (rb'{"\udc00": 1}', True),
        (rb'{"a": [{"b": "x\uDBFFy"}]}', True),
        (rb'{"name": "\ud83d\ude00"}', False),  # a pair: an emoji
        (rb'{"name": "\u00e9"}', False),
    ],
)
def test_lone_surrogates_are_refused(raw, refused):
    value = json.loads(raw)
    if refused:
        with pytest.raises(InvalidJSON, match="lone surrogate"):
            check_surrogates(raw, value)
    else:
        check_surrogates(raw, value)


async def test_a_lone_surrogate_in_an_admin_body_is_400(gateway):
    response = await gateway.post("/api/governance/customers", content=rb'{"name": "\ud800"}')
    assert response.status_code == 400 and response.json()["code"] == "invalid_json"
