"""Fault injection: options, ``/_dev/scenario``, ``/_dev/stats``, auth and drops."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from tollhouse.devupstream import DevUpstreamOptions, create_app
from tollhouse.devupstream.errors import InjectedDisconnect

from .helpers import chat_body, messages_body, sse_data

CHAT = "/v1/chat/completions"


def in_process(**options: Any) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=create_app(DevUpstreamOptions(**options)))
    return httpx.AsyncClient(transport=transport, base_url="http://upstream")


async def stats(client: httpx.AsyncClient) -> dict[str, Any]:
    result: dict[str, Any] = (await client.get("/_dev/stats")).json()
    return result


async def test_scenario_fails_next_count_requests(client: httpx.AsyncClient) -> None:
    response = await client.post("/_dev/scenario", json={"fail_status": 503, "count": 2})
    assert response.json()["pending"]["fail_status"] == [{"value": 503, "remaining": 2}]
    statuses = [(await client.post(CHAT, json=chat_body())).status_code for _ in range(3)]
    assert statuses == [503, 503, 200]
    counters = await stats(client)
    assert counters["failed_injected"] == 2
    assert counters["completed"] == 1
    assert counters["requests"] == 3
    assert counters["by_path"] == {CHAT: 3}


async def test_injected_errors_use_the_path_wire_format(client: httpx.AsyncClient) -> None:
    await client.post("/_dev/scenario", json={"fail_status": 429, "count": 2})
    openai = await client.post(CHAT, json=chat_body())
    assert openai.status_code == 429
    assert openai.headers["retry-after"] == "0"
    assert openai.json()["error"]["code"] == "rate_limit_exceeded"
    anthropic = await client.post("/v1/messages", json=messages_body())
    assert anthropic.status_code == 429
    assert anthropic.headers["retry-after"] == "0"
    assert anthropic.json() == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": anthropic.json()["error"]["message"]},
    }


async def test_scenarios_queue_in_order(client: httpx.AsyncClient) -> None:
    await client.post("/_dev/scenario", json={"fail_status": 500})
    await client.post("/_dev/scenario", json={"fail_status": 502})
    statuses = [
        (await client.post("/v1/embeddings", json={"model": "m", "input": "x"})).status_code
    ]
    statuses.append((await client.post(CHAT, json=chat_body())).status_code)
    statuses.append((await client.post(CHAT, json=chat_body())).status_code)
    assert statuses == [500, 502, 200]


async def test_control_requests_are_not_counted_or_failed(client: httpx.AsyncClient) -> None:
    await client.post("/_dev/scenario", json={"fail_status": 500, "count": 5})
    assert (await client.get("/health")).status_code == 200
    assert (await client.get("/v1/models")).status_code == 200
    counters = await stats(client)
    assert counters["requests"] == 1
    assert counters["failed_injected"] == 0
    pending = (await client.get("/_dev/scenario")).json()["pending"]
    assert pending["fail_status"] == [{"value": 500, "remaining": 5}]


async def test_bad_requests_do_not_consume_failures(client: httpx.AsyncClient) -> None:
    await client.post("/_dev/scenario", json={"fail_status": 503})
    assert (await client.post(CHAT, json={"model": "m"})).status_code == 400
    assert (await client.post(CHAT, json=chat_body())).status_code == 503
    assert (await stats(client))["rejected"] == 1


async def test_reset_clears_counters_and_scenarios(client: httpx.AsyncClient) -> None:
    await client.post(CHAT, json=chat_body())
    await client.post("/_dev/scenario", json={"fail_status": 503, "count": 9})
    assert (await client.post("/_dev/reset")).json() == {"status": "reset"}
    assert (await client.post(CHAT, json=chat_body())).status_code == 200
    counters = await stats(client)
    assert counters["requests"] == 1
    assert counters["completed"] == 1
    assert counters["failed_injected"] == 0


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"count": 1},
        {"fail_status": 200},
        {"fail_status": "503"},
        {"fail_status": 503, "count": 0},
        {"latency_ms": -1},
        {"disconnect_after_chunks": -1},
        {"fail_status": 503, "typo": 1},
        [1],
    ],
)
async def test_bad_scenarios_are_400(client: httpx.AsyncClient, body: object) -> None:
    response = await client.post("/_dev/scenario", json=body)
    assert response.status_code == 400
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


async def test_unknown_control_endpoint(client: httpx.AsyncClient) -> None:
    assert (await client.get("/_dev/nope")).status_code == 404


async def test_fail_every_counts_inference_requests() -> None:
    async with in_process(fail_status=503, fail_every=3) as client:
        statuses = [(await client.post(CHAT, json=chat_body())).status_code for _ in range(7)]
    assert statuses == [200, 200, 503, 200, 200, 503, 200]


async def test_fail_status_fails_every_request_and_models_stay_up() -> None:
    async with in_process(fail_status=500) as client:
        response = await client.post("/v1/messages", json=messages_body())
        assert response.status_code == 500
        assert response.json()["error"]["type"] == "api_error"
        assert (await client.get("/v1/models")).status_code == 200


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"authorization": "Bearer wrong"}, 401),
        ({"authorization": "Bearer sk-dev"}, 200),
        ({"authorization": "bearer sk-dev"}, 200),
        ({"x-api-key": "sk-dev"}, 200),
    ],
)
async def test_api_key(headers: dict[str, str], status: int) -> None:
    async with in_process(api_key="sk-dev") as client:
        chat = await client.post(CHAT, json=chat_body(), headers=headers)
        assert chat.status_code == status
        messages = await client.post("/v1/messages", json=messages_body(), headers=headers)
        assert messages.status_code == status
        assert (await client.get("/v1/models", headers=headers)).status_code == status
        assert (await client.get("/health")).status_code == 200
    if status == 401:
        assert chat.json()["error"]["code"] == "invalid_api_key"
        assert messages.json()["error"]["type"] == "authentication_error"


async def test_latency_option_and_scenario() -> None:
    async with in_process(latency_ms=30) as client:
        started = time.perf_counter()
        await client.post(CHAT, json=chat_body())
        assert time.perf_counter() - started >= 0.03
        await client.post("/_dev/scenario", json={"latency_ms": 0, "count": 1})
        started = time.perf_counter()
        await client.post(CHAT, json=chat_body())
        assert time.perf_counter() - started < 0.03
        started = time.perf_counter()
        await client.get("/health")
        assert time.perf_counter() - started < 0.03


async def test_chunk_delay_paces_content() -> None:
    async with in_process(chunk_delay_ms=10) as client:
        started = time.perf_counter()
        await client.post(CHAT, json=chat_body(max_tokens=5, stream=True))
        assert time.perf_counter() - started >= 0.05


async def test_injected_disconnect_in_process_raises(client: httpx.AsyncClient) -> None:
    """In-process there is no socket to drop; the exception reaches the caller."""
    await client.post("/_dev/scenario", json={"disconnect_after_chunks": 2})
    plain = await client.post(CHAT, json=chat_body())
    assert plain.status_code == 200  # a drop waits for the next streaming request
    with pytest.raises(InjectedDisconnect):
        await client.post(CHAT, json=chat_body(stream=True))
    events = sse_data((await client.post(CHAT, json=chat_body(stream=True))).text)
    assert events[-1] == "[DONE]"
    counters = await stats(client)
    assert counters["disconnected_injected"] == 1
    assert counters["completed"] == 2
