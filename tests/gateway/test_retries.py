"""Retries, fallbacks and upstream failures, counted on the real dev upstream."""

from __future__ import annotations

import socket
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tests.support import metric, records, running, scenario, upstream_stats

from tollhouse.config import load_settings
from tollhouse.gateway.upstreams import backoff_delay

HI = [{"role": "user", "content": "hi"}]
CHAT = {"model": "gpt-4o-mini", "messages": HI, "max_tokens": 2}


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- retries on one target --------------------------------------------------------------


@pytest.mark.parametrize("status", [503, 429, 500, 502])
async def test_retryable_failures_are_retried_until_success(make_settings, upstream, status):
    scenario(upstream, fail_status=status, count=2)
    async with running(make_settings(max_retries=2)) as (app, client):
        response = await client.post("/v1/chat/completions", json=CHAT)
        assert response.status_code == 200, response.text
        assert upstream_stats(upstream)["inference_requests"] == 3
        assert upstream_stats(upstream)["failed_injected"] == 2
        (record,) = await records(client, app)
        assert record["status"] == "success"
        assert record["id"] == response.headers["x-request-id"]
        failures = await metric(
            client, "tollhouse_upstream_errors_total", provider="openai", kind=str(status)
        )
        assert failures == 2


@pytest.mark.parametrize("max_retries", [0, 1, 3])
async def test_max_retries_is_honoured(make_settings, upstream, max_retries):
    scenario(upstream, fail_status=503, count=10)
    async with running(make_settings(max_retries=max_retries)) as (app, client):
        response = await client.post("/v1/chat/completions", json=CHAT)
        assert response.status_code == 502
        assert upstream_stats(upstream)["inference_requests"] == max_retries + 1
        (record,) = await records(client, app)
        assert record["status"] == "error"
        assert record["http_status"] == 502
        assert record["cost"] == 0
        assert "503" in record["error"]


async def test_rate_limit_exhausted_is_429(make_settings, upstream):
    scenario(upstream, fail_status=429, count=10)
    async with running(make_settings(max_retries=1)) as (_, client):
        response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 429
    assert response.headers["retry-after"] == "0"
    assert upstream_stats(upstream)["inference_requests"] == 2


async def test_no_retry_on_upstream_400(make_settings, upstream):
    scenario(upstream, fail_status=400, count=5)
    async with running(make_settings(max_retries=3)) as (app, client):
        response = await client.post("/v1/chat/completions", json=CHAT)
        assert response.status_code == 400
        assert upstream_stats(upstream)["inference_requests"] == 1
        (record,) = await records(client, app)
        assert (record["status"], record["http_status"]) == ("error", 400)


@pytest.mark.parametrize("status", [401, 403])
async def test_provider_credential_failure_is_502_without_retry(make_settings, upstream, status):
    # The provider refused *our* credentials: not the client's fault, and retrying the
    # same target cannot help (a fallback target may).
    scenario(upstream, fail_status=status, count=5)
    async with running(make_settings(max_retries=3)) as (_, client):
        response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == 502
    assert upstream_stats(upstream)["inference_requests"] == 1


@pytest.mark.parametrize("status", [404, 422])
async def test_no_retry_on_other_client_errors(make_settings, upstream, status):
    scenario(upstream, fail_status=status, count=5)
    async with running(make_settings(max_retries=3)) as (_, client):
        response = await client.post("/v1/chat/completions", json=CHAT)
    assert response.status_code == status
    assert upstream_stats(upstream)["inference_requests"] == 1


async def test_connection_refused_is_retried_then_502(make_settings):
    dead = {"preset": "openai", "base_url": f"http://127.0.0.1:{closed_port()}/v1"}
    async with running(make_settings(providers={"openai": dead}, max_retries=2)) as (app, client):
        response = await client.post("/v1/chat/completions", json=CHAT)
        assert response.status_code == 502
        body = response.json()
        assert body["error"]["code"] == "upstream_error"
        attempts = await metric(
            client, "tollhouse_upstream_errors_total", provider="openai", kind="connect"
        )
        assert attempts == 3
        (record,) = await records(client, app)
        assert (record["status"], record["http_status"], record["cost"]) == ("error", 502, 0)


async def test_streaming_request_is_retried_before_the_first_byte(make_settings, upstream):
    scenario(upstream, fail_status=503, count=1)
    async with running(make_settings(max_retries=1)) as (app, client):
        response = await client.post("/v1/chat/completions", json={**CHAT, "stream": True})
        assert response.status_code == 200
        assert response.text.endswith("data: [DONE]\n\n")
        assert upstream_stats(upstream)["inference_requests"] == 2
        (record,) = await records(client, app)
        assert (record["streamed"], record["completion_tokens"]) == (True, 2)


async def test_messages_are_retried_too(make_settings, upstream):
    scenario(upstream, fail_status=529, count=1)
    async with running(make_settings(max_retries=1)) as (_, client):
        response = await client.post(
            "/v1/messages", json={"model": "claude-haiku-4-5", "messages": HI, "max_tokens": 2}
        )
    assert response.status_code == 200, response.text
    assert upstream_stats(upstream)["inference_requests"] == 2


async def test_timeout_is_504_and_not_retried(make_settings, upstream):
    scenario(upstream, latency_ms=2000)
    settings = make_settings(max_retries=2, request_timeout_s=0.2)
    async with running(settings) as (app, client):
        response = await client.post("/v1/chat/completions", json=CHAT)
        assert response.status_code == 504
        assert response.json()["error"]["code"] == "upstream_timeout"
        assert upstream_stats(upstream)["inference_requests"] == 1
        (record,) = await records(client, app)
        assert (record["status"], record["http_status"]) == ("error", 504)


# --- fallbacks --------------------------------------------------------------------------


async def test_fallback_to_the_next_target_when_a_provider_is_down(make_settings, upstream):
    providers = {
        "dead": {"preset": "openai", "base_url": f"http://127.0.0.1:{closed_port()}/v1"},
        "openai": {"preset": "openai", "base_url": f"{upstream.url}/v1"},
    }
    models = [{"name": "smart", "targets": ["dead/gpt-4o-mini", "openai/gpt-4o-mini"]}]
    settings = make_settings(providers=providers, models=models, max_retries=1)
    async with running(settings) as (app, client):
        response = await client.post("/v1/chat/completions", json={**CHAT, "model": "smart"})
        assert response.status_code == 200, response.text
        assert response.headers["x-tollhouse-target"] == "openai/gpt-4o-mini"
        (record,) = await records(client, app)
        assert (record["provider"], record["model"], record["status"]) == (
            "openai",
            "gpt-4o-mini",
            "success",
        )
        assert record["cost"] == Decimal("0.0000018")  # 4 × 0.15 + 2 × 0.60
        dead_attempts = await metric(client, "tollhouse_upstream_errors_total", provider="dead")
        assert dead_attempts == 2
    assert upstream_stats(upstream)["inference_requests"] == 1


async def test_fallback_after_retries_are_exhausted(make_settings, upstream):
    models = [{"name": "smart", "targets": ["openai/gpt-4o-mini", "anthropic/claude-haiku-4-5"]}]
    scenario(upstream, fail_status=503, count=2)
    async with running(make_settings(models=models, max_retries=1)) as (app, client):
        response = await client.post("/v1/chat/completions", json={**CHAT, "model": "smart"})
        assert response.status_code == 200, response.text
        assert response.headers["x-tollhouse-target"] == "anthropic/claude-haiku-4-5"
        (record,) = await records(client, app)
        assert (record["provider"], record["model"]) == ("anthropic", "claude-haiku-4-5")
    assert upstream_stats(upstream)["by_path"] == {"/v1/chat/completions": 2, "/v1/messages": 1}


async def test_no_fallback_on_a_client_error(make_settings, upstream):
    models = [{"name": "smart", "targets": ["openai/gpt-4o-mini", "anthropic/claude-haiku-4-5"]}]
    scenario(upstream, fail_status=400)
    async with running(make_settings(models=models)) as (_, client):
        response = await client.post("/v1/chat/completions", json={**CHAT, "model": "smart"})
    assert response.status_code == 400
    assert upstream_stats(upstream)["inference_requests"] == 1


async def test_every_target_failing_is_502_with_one_record(make_settings, upstream):
    models = [{"name": "smart", "targets": ["openai/gpt-4o-mini", "openai/gpt-4.1-mini"]}]
    scenario(upstream, fail_status=500, count=10)
    async with running(make_settings(models=models, max_retries=1)) as (app, client):
        response = await client.post("/v1/chat/completions", json={**CHAT, "model": "smart"})
        assert response.status_code == 502
        assert upstream_stats(upstream)["inference_requests"] == 4
        (record,) = await records(client, app)
        assert record["status"] == "error"
        assert record["id"] == response.headers.get("x-request-id")


async def test_embeddings_skip_targets_that_cannot_serve_them(make_settings, upstream):
    models = [
        {
            "name": "embed",
            "targets": ["anthropic/claude-haiku-4-5", "openai/text-embedding-3-small"],
        }
    ]
    async with running(make_settings(models=models)) as (app, client):
        response = await client.post("/v1/embeddings", json={"model": "embed", "input": "hi"})
        assert response.status_code == 200, response.text
        (record,) = await records(client, app)
        assert record["model"] == "text-embedding-3-small"


# --- backoff ----------------------------------------------------------------------------

_SETTINGS = load_settings(
    env={"TOLLHOUSE_CONFIG": "/dev/null"}, retry_backoff_s=0.25, retry_backoff_max_s=8.0
)


@given(st.integers(0, 20))
def test_backoff_is_full_jitter_under_the_cap(attempt):
    delay = backoff_delay(attempt, _SETTINGS)
    assert 0 <= delay <= min(8.0, 0.25 * 2**attempt)


@given(st.integers(0, 5), st.sampled_from(["0", "1", "2.5", "8"]))
def test_short_retry_after_wins(attempt, retry_after):
    assert backoff_delay(attempt, _SETTINGS, retry_after) == float(retry_after)


@given(st.integers(0, 5), st.sampled_from(["9", "3600", "-1", "soon", ""]))
def test_long_or_bad_retry_after_falls_back_to_backoff(attempt, retry_after):
    delay = backoff_delay(attempt, _SETTINGS, retry_after)
    assert 0 <= delay <= min(8.0, 0.25 * 2**attempt)
