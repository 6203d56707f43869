"""Every error path over HTTP answers in the shape of its path, and bad input is never a 5xx.

- ``/v1/chat/completions``, ``/v1/embeddings``, other ``/v1/*``: OpenAI's
  ``{"error": {"message", "type", "param", "code"}}``;
- ``/v1/messages``: Anthropic's ``{"type": "error", "error": {"type", "message"}}``;
- ``/api/*``: ``{"error": "<message>", "code": "<code>"}``.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from tests.support import JSON_WRITES, scenario, upstream_stats

from tollhouse.app import create_app

CHAT = "/v1/chat/completions"
EMBEDDINGS = "/v1/embeddings"
MESSAGES = "/v1/messages"
HI = [{"role": "user", "content": "hi"}]
ADMIN_KEY = "admin-key-0123456789abcdefghijklmnopq"


def assert_openai_error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert list(body) == ["error"], body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["type"], str) and error["type"]
    assert error["param"] is None or isinstance(error["param"], str)
    assert isinstance(error["code"], str) and error["code"]
    if code is not None:
        assert error["code"] == code, error
    return error


def assert_anthropic_error(response: httpx.Response, status: int, kind: str | None = None):
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"type", "error"}, body
    assert body["type"] == "error"
    assert set(body["error"]) == {"type", "message"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    if kind is not None:
        assert body["error"]["type"] == kind, body
    return body["error"]


def assert_admin_error(response: httpx.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error", "code"}, body
    assert isinstance(body["error"], str) and body["error"]
    assert isinstance(body["code"], str) and body["code"]
    if code is not None:
        assert body["code"] == code, body
    return body


@contextlib.asynccontextmanager
async def client_for(
    app: Starlette, client: tuple[str, int] = ("127.0.0.1", 50000)
) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=client)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://127.0.0.1", headers=JSON_WRITES
        ) as c:
            yield c


# --- /v1/chat/completions and /v1/embeddings: OpenAI shape ---------------------------


@pytest.mark.parametrize("path", [CHAT, EMBEDDINGS])
async def test_invalid_json(gateway, path):
    for raw in (b"{not json", b"", b"\xff\xfe", b'{"model": "gpt-4o-mini",}'):
        response = await gateway.post(path, content=raw)
        assert_openai_error(response, 400, "invalid_json")


@pytest.mark.parametrize("path", [CHAT, EMBEDDINGS])
async def test_json_that_is_not_an_object(gateway, path):
    for raw in (b"[1, 2]", b'"text"', b"42", b"null", b"true"):
        response = await gateway.post(path, content=raw)
        assert_openai_error(response, 400, "invalid_json")


@pytest.mark.parametrize("path", [CHAT, EMBEDDINGS])
async def test_missing_or_wrong_model(gateway, path):
    for model in (None, "", 42, ["gpt-4o-mini"], {"id": "gpt-4o-mini"}):
        body: dict[str, Any] = {"messages": HI, "input": "hi"}
        if model is not None:
            body["model"] = model
        error = assert_openai_error(await gateway.post(path, json=body), 400)
        assert error["type"] == "invalid_request_error"
        assert error["param"] == "model"


@pytest.mark.parametrize("path", [CHAT, EMBEDDINGS])
async def test_unknown_model_is_404(gateway, path):
    response = await gateway.post(path, json={"model": "no-such-model-xyz", "messages": HI})
    error = assert_openai_error(response, 404, "model_not_found")
    assert error["type"] == "invalid_request_error"
    assert error["param"] == "model"
    assert "no-such-model-xyz" in error["message"]


@pytest.mark.parametrize("path", [CHAT, EMBEDDINGS])
async def test_unpriced_model_is_400(gateway, upstream, path):
    response = await gateway.post(path, json={"model": "openai/unpriced-xyz", "messages": HI})
    error = assert_openai_error(response, 400, "model_not_priced")
    assert "openai/unpriced-xyz" in error["message"]
    assert "allow_unpriced" in error["message"]
    # Refused before anything was sent upstream.
    assert upstream_stats(upstream)["inference_requests"] == 0


async def test_streaming_embeddings_is_400(gateway, upstream):
    body = {"model": "text-embedding-3-small", "input": "hi", "stream": True}
    error = assert_openai_error(await gateway.post(EMBEDDINGS, json=body), 400)
    assert error["param"] == "stream"
    assert upstream_stats(upstream)["inference_requests"] == 0


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (CHAT, {"model": "gpt-4o-mini", "messages": HI}),
        (EMBEDDINGS, {"model": "text-embedding-3-small", "input": "hi"}),
    ],
)
async def test_upstream_500_becomes_502(gateway, upstream, path, body):
    scenario(upstream, fail_status=500, count=3)  # the first try and both retries
    error = assert_openai_error(await gateway.post(path, json=body), 502, "upstream_error")
    assert error["type"] == "api_error"
    assert upstream_stats(upstream)["failed_injected"] == 3


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (CHAT, {"model": "gpt-4o-mini", "messages": HI}),
        (CHAT, {"model": "gpt-4o-mini", "messages": HI, "stream": True}),
        (EMBEDDINGS, {"model": "text-embedding-3-small", "input": "hi"}),
    ],
)
async def test_upstream_400_is_passed_through(gateway, upstream, path, body):
    scenario(upstream, fail_status=400)
    error = assert_openai_error(await gateway.post(path, json=body), 400, "upstream_error")
    assert error["type"] == "invalid_request_error"
    assert "400" in error["message"]


async def test_upstream_validation_400_is_passed_through(gateway):
    response = await gateway.post(CHAT, json={"model": "gpt-4o-mini", "messages": []})
    error = assert_openai_error(response, 400, "upstream_error")
    assert "messages" in error["message"]


async def test_upstream_429_after_retries_keeps_status_and_retry_after(gateway, upstream):
    scenario(upstream, fail_status=429, count=3)
    response = await gateway.post(CHAT, json={"model": "gpt-4o-mini", "messages": HI})
    error = assert_openai_error(response, 429, "upstream_error")
    assert error["type"] == "rate_limit_error"
    assert response.headers["retry-after"] == "0"


async def test_upstream_unreachable_is_502(make_settings):
    closed = _closed_port()
    settings = make_settings(
        providers={"openai": {"preset": "openai", "base_url": f"http://127.0.0.1:{closed}/v1"}},
        max_retries=0,
    )
    async with client_for(create_app(settings)) as client:
        response = await client.post(CHAT, json={"model": "gpt-4o-mini", "messages": HI})
    error = assert_openai_error(response, 502, "upstream_error")
    assert "unreachable" in error["message"]


async def test_unknown_route_is_404(gateway):
    for path in ("/v1/nope", "/v1/chat/completions/extra", "/nope", "/v2/x"):
        for method in ("GET", "POST"):
            response = await gateway.request(method, path, json={})
            error = assert_openai_error(response, 404, "not_found")
            assert path in error["message"]


@pytest.mark.parametrize("path", [CHAT, EMBEDDINGS])
async def test_wrong_method_is_405(gateway, path):
    for method in ("GET", "PUT", "DELETE", "PATCH"):
        response = await gateway.request(method, path)
        error = assert_openai_error(response, 405)
        assert method in error["message"]


async def test_wrong_method_names_the_allowed_ones(gateway):
    # RFC 9110 §15.5.6: a 405 response MUST carry an Allow header.
    response = await gateway.get(CHAT)
    assert response.status_code == 405
    assert response.headers.get("allow") == "POST"


async def test_models_wrong_method_is_405(gateway):
    assert_openai_error(await gateway.post("/v1/models", json={}), 405)


# --- /v1/messages: Anthropic shape --------------------------------------------------


async def test_messages_bad_json(gateway):
    for raw in (b"{not json", b"", b"[1]", b'"x"'):
        response = await gateway.post(MESSAGES, content=raw)
        assert_anthropic_error(response, 400, "invalid_request_error")


async def test_messages_missing_model(gateway):
    response = await gateway.post(MESSAGES, json={"messages": HI, "max_tokens": 5})
    assert_anthropic_error(response, 400, "invalid_request_error")


async def test_messages_unknown_model(gateway):
    body = {"model": "no-such-model-xyz", "messages": HI, "max_tokens": 5}
    error = assert_anthropic_error(await gateway.post(MESSAGES, json=body), 404)
    assert error["type"] == "not_found_error"


async def test_messages_unpriced_model(gateway):
    body = {"model": "anthropic/unpriced-xyz", "messages": HI, "max_tokens": 5}
    error = assert_anthropic_error(await gateway.post(MESSAGES, json=body), 400)
    assert "allow_unpriced" in error["message"]


@pytest.mark.parametrize("model", ["claude-haiku-4-5", "gpt-4o-mini"])
async def test_messages_upstream_500_is_502(gateway, upstream, model):
    scenario(upstream, fail_status=500, count=3)
    body = {"model": model, "messages": HI, "max_tokens": 5}
    assert_anthropic_error(await gateway.post(MESSAGES, json=body), 502, "api_error")


@pytest.mark.parametrize("model", ["claude-haiku-4-5", "gpt-4o-mini"])
async def test_messages_upstream_429_is_rate_limit_error(gateway, upstream, model):
    scenario(upstream, fail_status=429, count=3)
    body = {"model": model, "messages": HI, "max_tokens": 5}
    assert_anthropic_error(await gateway.post(MESSAGES, json=body), 429, "rate_limit_error")


async def test_messages_upstream_400_is_passed_through(gateway):
    # Anthropic requires max_tokens: the provider's own 400 reaches the client as a 400.
    body = {"model": "claude-haiku-4-5", "messages": HI}
    error = assert_anthropic_error(await gateway.post(MESSAGES, json=body), 400)
    assert error["type"] == "invalid_request_error"
    assert "max_tokens" in error["message"]


async def test_messages_unknown_subpath_is_anthropic_404(gateway):
    response = await gateway.post("/v1/messages/batches", json={})
    assert_anthropic_error(response, 404, "not_found_error")


async def test_messages_wrong_method_is_anthropic_405(gateway):
    response = await gateway.get(MESSAGES)
    assert response.status_code == 405
    assert_anthropic_error(response, 405)


async def test_embeddings_on_an_anthropic_model_is_a_client_error(gateway, upstream):
    body = {"model": "claude-haiku-4-5", "input": "hi"}
    error = assert_openai_error(await gateway.post(EMBEDDINGS, json=body), 400)
    assert "embeddings" in error["message"]
    assert upstream_stats(upstream)["inference_requests"] == 0


# --- bad input never causes a 5xx ------------------------------------------------------

_BAD_BODIES: dict[str, tuple[str, dict[str, Any]]] = {
    # OpenAI-format provider, passed through
    "chat-openai-no-messages": (CHAT, {"model": "gpt-4o-mini"}),
    "chat-openai-messages-str": (CHAT, {"model": "gpt-4o-mini", "messages": "hi"}),
    "chat-openai-messages-ints": (CHAT, {"model": "gpt-4o-mini", "messages": [1, 2]}),
    "chat-openai-max-tokens-str": (
        CHAT,
        {"model": "gpt-4o-mini", "messages": HI, "max_tokens": "ten"},
    ),
    "chat-openai-max-tokens-neg": (
        CHAT,
        {"model": "gpt-4o-mini", "messages": HI, "max_tokens": -1},
    ),
    "chat-openai-stream-messages-str": (
        CHAT,
        {"model": "gpt-4o-mini", "messages": "hi", "stream": True},
    ),
    "chat-openai-stream-options-str": (
        CHAT,
        {"model": "gpt-4o-mini", "messages": HI, "stream": True, "stream_options": "yes"},
    ),
    "chat-openai-stream-options-list": (
        CHAT,
        {"model": "gpt-4o-mini", "messages": HI, "stream": True, "stream_options": [1]},
    ),
    "chat-openai-stream-options-int": (
        CHAT,
        {"model": "gpt-4o-mini", "messages": HI, "stream": True, "stream_options": 7},
    ),
    # Anthropic provider, translated
    "chat-anthropic-no-messages": (CHAT, {"model": "claude-haiku-4-5"}),
    "chat-anthropic-messages-str": (CHAT, {"model": "claude-haiku-4-5", "messages": "hi"}),
    "chat-anthropic-messages-ints": (CHAT, {"model": "claude-haiku-4-5", "messages": [1]}),
    "chat-anthropic-no-content": (
        CHAT,
        {"model": "claude-haiku-4-5", "messages": [{"role": "user"}]},
    ),
    "chat-anthropic-content-int": (
        CHAT,
        {"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": 5}]},
    ),
    "chat-anthropic-max-tokens-str": (
        CHAT,
        {"model": "claude-haiku-4-5", "messages": HI, "max_tokens": "x"},
    ),
    "chat-anthropic-n-2": (CHAT, {"model": "claude-haiku-4-5", "messages": HI, "n": 2}),
    "chat-anthropic-stream-messages-ints": (
        CHAT,
        {"model": "claude-haiku-4-5", "messages": [1], "stream": True},
    ),
    "chat-anthropic-stream-options-int": (
        CHAT,
        {"model": "claude-haiku-4-5", "messages": HI, "stream": True, "stream_options": 1},
    ),
    # /v1/messages to Anthropic (passed through) and to OpenAI (translated)
    "messages-anthropic-no-max-tokens": (MESSAGES, {"model": "claude-haiku-4-5", "messages": HI}),
    "messages-anthropic-messages-str": (
        MESSAGES,
        {"model": "claude-haiku-4-5", "messages": "hi", "max_tokens": 5},
    ),
    "messages-openai-no-messages": (MESSAGES, {"model": "gpt-4o-mini", "max_tokens": 5}),
    "messages-openai-messages-str": (
        MESSAGES,
        {"model": "gpt-4o-mini", "messages": "hi", "max_tokens": 5},
    ),
    "messages-openai-messages-ints": (
        MESSAGES,
        {"model": "gpt-4o-mini", "messages": [1], "max_tokens": 5},
    ),
    "messages-openai-max-tokens-str": (
        MESSAGES,
        {"model": "gpt-4o-mini", "messages": HI, "max_tokens": "x"},
    ),
    "messages-openai-system-int": (
        MESSAGES,
        {"model": "gpt-4o-mini", "messages": HI, "max_tokens": 5, "system": 5},
    ),
    "messages-openai-content-int": (
        MESSAGES,
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": 5}]},
    ),
    "messages-openai-stream-messages-ints": (
        MESSAGES,
        {"model": "gpt-4o-mini", "messages": [1], "max_tokens": 5, "stream": True},
    ),
    # Embeddings
    "embeddings-no-input": (EMBEDDINGS, {"model": "text-embedding-3-small"}),
    "embeddings-empty-input": (EMBEDDINGS, {"model": "text-embedding-3-small", "input": []}),
    "embeddings-input-int": (EMBEDDINGS, {"model": "text-embedding-3-small", "input": 5}),
    "embeddings-dimensions-str": (
        EMBEDDINGS,
        {"model": "text-embedding-3-small", "input": "hi", "dimensions": "x"},
    ),
}


@pytest.mark.parametrize("group", ["chat-openai", "chat-anthropic", "messages", "embeddings"])
async def test_bad_input_is_never_a_5xx(gateway, group):
    problems = []
    for case, (path, body) in _BAD_BODIES.items():
        if not case.startswith(group):
            continue
        response = await gateway.post(path, json=body)
        if not 400 <= response.status_code < 500:
            problems.append(f"{case}: {response.status_code} {response.text[:120]}")
        elif path == MESSAGES:
            assert_anthropic_error(response, response.status_code)
        else:
            assert_openai_error(response, response.status_code)
    assert not problems, "\n".join(problems)


# --- /api/*: the admin shape ----------------------------------------------------------


async def test_admin_bad_limit(gateway):
    for limit in ("abc", "0", "1001", "-1", "1.5", "", " 5"):
        response = await gateway.get("/api/usage", params={"limit": limit})
        body = assert_admin_error(response, 400, "invalid_value")
        assert "limit" in body["error"]


@pytest.mark.parametrize("param", ["since", "until"])
async def test_admin_bad_time(gateway, param):
    for value in ("yesterday", "2026-13-01", "1e5", "99999999999999999999", "2026-01-01T25:00"):
        response = await gateway.get("/api/usage", params={param: value})
        body = assert_admin_error(response, 400, "invalid_value")
        assert param in body["error"]


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


async def test_admin_bad_cursor(gateway):
    for cursor in (
        "!!!",
        "not-a-cursor",
        "é",
        _b64(b"\xff\xfe\xfd"),
        _b64(b"garbage|id"),
        _b64(b"no separator at all"),
    ):
        response = await gateway.get("/api/usage", params={"cursor": cursor})
        body = assert_admin_error(response, 400, "invalid_value")
        assert "cursor" in body["error"]


@pytest.mark.parametrize("stamp", [b"2026-01-01T00:00:00", b"2026-01-01"])
async def test_admin_cursor_without_time_zone_is_400(gateway, stamp):
    # Well-formed, but not a cursor this API returns (those carry +00:00).
    response = await gateway.get("/api/usage", params={"cursor": _b64(stamp + b"|req_x")})
    body = assert_admin_error(response, 400, "invalid_value")
    assert "cursor" in body["error"]


async def test_admin_unknown_route_is_404(gateway):
    assert_admin_error(await gateway.get("/api/nope"), 404, "not_found")


async def test_admin_wrong_method_is_405(gateway):
    assert_admin_error(await gateway.post("/api/usage", json={}), 405)


async def test_admin_key_required(make_settings):
    app = create_app(make_settings(admin_key=ADMIN_KEY))
    async with client_for(app) as client:
        missing = await client.get("/api/usage")
        assert_admin_error(missing, 401, "invalid_api_key")
        wrong = await client.get("/api/usage", headers={"authorization": "Bearer nope"})
        assert_admin_error(wrong, 401, "invalid_api_key")
        basic = await client.get("/api/usage", headers={"authorization": f"Basic {ADMIN_KEY}"})
        assert_admin_error(basic, 401, "invalid_api_key")
        prefix = await client.get("/api/usage", headers={"authorization": f"Bearer {ADMIN_KEY}k"})
        assert_admin_error(prefix, 401, "invalid_api_key")
        right = await client.get("/api/usage", headers={"authorization": f"Bearer {ADMIN_KEY}"})
        assert right.status_code == 200, right.text
        assert right.json()["usage"] == []
        # Unknown admin routes are not revealed without the key either.
        assert_admin_error(await client.get("/api/nope"), 401)


async def test_admin_key_also_required_from_loopback_and_not_echoed(make_settings):
    app = create_app(make_settings(admin_key="s3cret-admin-0123456789abcdefghijklmnop"))
    async with client_for(app) as client:
        response = await client.get("/api/usage", headers={"authorization": "Bearer wrong"})
    assert response.status_code == 401
    assert "s3cret-admin-0123456789abcdefghijklmnop" not in response.text


async def test_admin_api_without_key_refuses_non_loopback_clients(make_settings):
    app = create_app(make_settings())
    async with client_for(app, client=("10.1.2.3", 1234)) as client:
        response = await client.get("/api/usage")
        body = assert_admin_error(response, 403, "permission_denied")
        assert "loopback" in body["error"]
        # The inference API is not the admin API: it stays open.
        health = await client.get("/healthz")
        assert health.status_code == 200


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1"])
async def test_admin_api_without_key_answers_loopback_clients(make_settings, host):
    app = create_app(make_settings())
    async with client_for(app, client=(host, 1234)) as client:
        response = await client.get("/api/usage")
    assert response.status_code == 200, response.text


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
