"""Inference requests through the in-process gateway to the real dev upstream, as recorded.

The dev upstream's counts are deterministic: a user message "hi" is 4 prompt tokens, and
a reply is ``min(max_tokens, 16)`` tokens. Costs below are worked out by hand from the
shipped catalog's prices (USD per 1M tokens).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
from tests.support import metric, records, running, scenario

from tollhouse.gateway.estimate import prompt_token_bound

HI = [{"role": "user", "content": "hi"}]


async def only_record(gateway, app) -> dict[str, Any]:
    (record,) = await records(gateway, app)
    return record


def sse_payloads(text: str) -> list[Any]:
    out: list[Any] = []
    for line in text.split("\n"):
        if line.startswith("data: "):
            data = line[len("data: ") :]
            out.append(data if data == "[DONE]" else orjson.loads(data))
    return out


def sse_events(text: str) -> list[tuple[str, Any]]:
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.split("\n"))
        events.append((fields["event"], orjson.loads(fields["data"])))
    return events


# --- plain chat -------------------------------------------------------------------------


async def test_plain_chat_is_recorded_with_exact_cost(gateway, app):
    response = await gateway.post(
        "/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": HI}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["usage"]["prompt_tokens"] == 4
    assert body["usage"]["completion_tokens"] == 16
    assert body["model"] == "gpt-4o-mini"

    record = await only_record(gateway, app)
    # 4 × 0.15 + 16 × 0.60 = 10.2 USD per 1M tokens
    assert record["cost"] == Decimal("0.0000102")
    assert isinstance(record["cost"], Decimal)
    assert record["endpoint"] == "chat"
    assert (record["provider"], record["model"]) == ("openai", "gpt-4o-mini")
    assert (record["prompt_tokens"], record["completion_tokens"], record["cached_tokens"]) == (
        4,
        16,
        0,
    )
    assert record["priced"] is True
    assert record["status"] == "success"
    assert record["http_status"] == 200
    assert record["streamed"] is False
    assert record["error"] is None
    assert record["latency_ms"] > 0
    assert record["upstream_request_id"]


async def test_request_id_header_is_the_record_id(gateway, app):
    ids = []
    for _ in range(3):
        response = await gateway.post(
            "/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": HI, "max_tokens": 1}
        )
        assert response.status_code == 200
        ids.append(response.headers["x-request-id"])
        assert response.headers["x-tollhouse-target"] == "openai/gpt-4o-mini"
    assert len(set(ids)) == 3
    assert {r["id"] for r in await records(gateway, app)} == set(ids)


async def test_chat_without_prefix_path(gateway, app):
    response = await gateway.post(
        "/chat/completions", json={"model": "gpt-4o-mini", "messages": HI, "max_tokens": 2}
    )
    assert response.status_code == 200
    assert (await only_record(gateway, app))["completion_tokens"] == 2


async def test_max_tokens_bounds_the_reply_and_the_cost(gateway, app):
    response = await gateway.post(
        "/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": HI, "max_tokens": 5}
    )
    assert response.json()["usage"]["completion_tokens"] == 5
    # 4 × 0.15 + 5 × 0.60 = 3.6
    assert (await only_record(gateway, app))["cost"] == Decimal("0.0000036")


async def test_chat_to_anthropic_is_translated_and_recorded(gateway, app):
    response = await gateway.post(
        "/v1/chat/completions",
        json={"model": "claude-haiku-4-5", "messages": HI, "max_tokens": 5},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["usage"]["prompt_tokens"] == 4
    assert body["usage"]["completion_tokens"] == 5
    record = await only_record(gateway, app)
    assert (record["provider"], record["model"], record["endpoint"]) == (
        "anthropic",
        "claude-haiku-4-5",
        "chat",
    )
    # 4 × 1.00 + 5 × 5.00 = 29
    assert record["cost"] == Decimal("0.000029")


async def test_chat_to_anthropic_without_max_tokens_sends_the_model_cap(gateway, app, upstream):
    response = await gateway.post(
        "/v1/chat/completions", json={"model": "claude-haiku-4-5", "messages": HI}
    )
    assert response.status_code == 200, response.text
    # The catalog cap (64,000) went upstream; the dev upstream's reply is its default 16.
    assert response.json()["usage"]["completion_tokens"] == 16


async def test_default_max_output_tokens_applies_to_unpriced_anthropic_models(make_settings):
    settings = make_settings(allow_unpriced=True, default_max_output_tokens=3)
    async with running(settings) as (_, client):
        response = await client.post(
            "/v1/chat/completions", json={"model": "anthropic/claude-local", "messages": HI}
        )
        assert response.status_code == 200, response.text
        assert response.json()["usage"]["completion_tokens"] == 3


# --- streaming chat ---------------------------------------------------------------------


async def test_streaming_chat_is_recorded_from_the_final_usage_chunk(gateway, app):
    response = await gateway.post(
        "/v1/chat/completions",
        json={"model": "gpt-4o-mini", "messages": HI, "max_tokens": 5, "stream": True},
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    payloads = sse_payloads(response.text)
    assert payloads[-1] == "[DONE]"
    chunks = payloads[:-1]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert len(text.split()) == 5

    record = await only_record(gateway, app)
    assert record["streamed"] is True
    assert record["id"] == response.headers["x-request-id"]
    assert (record["prompt_tokens"], record["completion_tokens"]) == (4, 5)
    assert record["cost"] == Decimal("0.0000036")
    assert record["status"] == "success"


async def test_usage_chunk_hidden_when_the_client_did_not_ask(gateway, app):
    response = await gateway.post(
        "/v1/chat/completions",
        json={"model": "gpt-4o-mini", "messages": HI, "max_tokens": 3, "stream": True},
    )
    chunks = [p for p in sse_payloads(response.text) if p != "[DONE]"]
    assert chunks
    assert all(c["choices"] for c in chunks)  # no usage-only chunk
    assert not any(c.get("usage") for c in chunks)
    # ... but the gateway still metered it.
    assert (await only_record(gateway, app))["completion_tokens"] == 3


async def test_usage_chunk_passed_on_when_the_client_asked(gateway, app):
    response = await gateway.post(
        "/v1/chat/completions",
        json={
            "model": "gpt-4o-mini",
            "messages": HI,
            "max_tokens": 3,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    )
    chunks = [p for p in sse_payloads(response.text) if p != "[DONE]"]
    usage_chunks = [c for c in chunks if not c["choices"]]
    assert len(usage_chunks) == 1
    assert usage_chunks[0]["usage"]["prompt_tokens"] == 4
    assert usage_chunks[0]["usage"]["completion_tokens"] == 3
    assert chunks[-1] is usage_chunks[0]
    assert (await only_record(gateway, app))["completion_tokens"] == 3


async def test_streaming_chat_to_anthropic_is_recorded(gateway, app):
    response = await gateway.post(
        "/v1/chat/completions",
        json={
            "model": "claude-haiku-4-5",
            "messages": HI,
            "max_tokens": 4,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    )
    assert response.status_code == 200
    payloads = sse_payloads(response.text)
    assert payloads[-1] == "[DONE]"
    usage = [p["usage"] for p in payloads[:-1] if p.get("usage")]
    assert usage[-1]["completion_tokens"] == 4
    record = await only_record(gateway, app)
    assert record["streamed"] is True
    assert (record["prompt_tokens"], record["completion_tokens"]) == (4, 4)
    # 4 × 1.00 + 4 × 5.00 = 24
    assert record["cost"] == Decimal("0.000024")


# --- /v1/messages -----------------------------------------------------------------------


async def test_messages_to_anthropic(gateway, app):
    response = await gateway.post(
        "/v1/messages", json={"model": "claude-haiku-4-5", "messages": HI, "max_tokens": 5}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["type"] == "message"
    assert body["usage"]["input_tokens"] == 4
    assert body["usage"]["output_tokens"] == 5
    record = await only_record(gateway, app)
    assert (record["endpoint"], record["provider"], record["model"]) == (
        "messages",
        "anthropic",
        "claude-haiku-4-5",
    )
    assert record["cost"] == Decimal("0.000029")
    assert record["id"] == response.headers["x-request-id"]


async def test_messages_to_openai_is_translated(gateway, app):
    response = await gateway.post(
        "/v1/messages",
        json={"model": "gpt-4o-mini", "messages": HI, "max_tokens": 5, "system": "Be brief."},
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["type"] == "message"
    assert body["role"] == "assistant"
    assert body["content"][0]["type"] == "text"
    assert body["stop_reason"] == "max_tokens"
    # "Be brief." (9 bytes) + "hi" (2 bytes) = 11 // 4 + 4 × 2 messages = 10
    assert body["usage"]["input_tokens"] == 10
    assert body["usage"]["output_tokens"] == 5
    record = await only_record(gateway, app)
    assert (record["endpoint"], record["provider"]) == ("messages", "openai")
    # 10 × 0.15 + 5 × 0.60 = 4.5
    assert record["cost"] == Decimal("0.0000045")


async def test_streaming_messages_to_anthropic(gateway, app):
    response = await gateway.post(
        "/v1/messages",
        json={"model": "claude-haiku-4-5", "messages": HI, "max_tokens": 3, "stream": True},
    )
    assert response.status_code == 200
    names = [name for name, _ in sse_events(response.text)]
    assert names[0] == "message_start" and names[-1] == "message_stop"
    record = await only_record(gateway, app)
    assert record["streamed"] is True
    assert (record["prompt_tokens"], record["completion_tokens"]) == (4, 3)
    assert record["cost"] == Decimal("0.000019")


async def test_streaming_messages_to_openai(gateway, app):
    response = await gateway.post(
        "/v1/messages",
        json={"model": "gpt-4o-mini", "messages": HI, "max_tokens": 3, "stream": True},
    )
    assert response.status_code == 200
    events = sse_events(response.text)
    names = [name for name, _ in events]
    assert names[0] == "message_start" and names[-1] == "message_stop"
    deltas = [data for name, data in events if name == "message_delta"]
    assert deltas[-1]["usage"]["output_tokens"] == 3
    record = await only_record(gateway, app)
    assert (record["provider"], record["streamed"]) == ("openai", True)
    assert (record["prompt_tokens"], record["completion_tokens"]) == (4, 3)
    assert record["cost"] == Decimal("0.0000024")


# --- embeddings -------------------------------------------------------------------------


async def test_embeddings_are_recorded(gateway, app):
    response = await gateway.post(
        "/v1/embeddings", json={"model": "text-embedding-3-small", "input": "hello world"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["data"]) == 1
    assert body["usage"]["prompt_tokens"] == 2  # 11 bytes // 4
    record = await only_record(gateway, app)
    assert (record["endpoint"], record["model"]) == ("embeddings", "text-embedding-3-small")
    assert (record["prompt_tokens"], record["completion_tokens"]) == (2, 0)
    # 2 × 0.02
    assert record["cost"] == Decimal("0.00000004")


async def test_embeddings_batch(gateway, app):
    response = await gateway.post(
        "/embeddings",
        json={"model": "text-embedding-3-large", "input": ["a" * 40, "b" * 400], "dimensions": 4},
    )
    assert response.status_code == 200, response.text
    assert [len(d["embedding"]) for d in response.json()["data"]] == [4, 4]
    record = await only_record(gateway, app)
    assert record["prompt_tokens"] == 110
    # 110 × 0.13
    assert record["cost"] == Decimal("0.0000143")


# --- unpriced use ----------------------------------------------------------------------


async def test_unpriced_allowed_request_is_recorded_and_counted(make_settings):
    async with running(make_settings(allow_unpriced=True)) as (app, client):
        response = await client.post(
            "/v1/chat/completions", json={"model": "openai/house-model", "messages": HI}
        )
        assert response.status_code == 200, response.text
        (record,) = await records(client, app)
        assert record["priced"] is False
        assert record["cost"] == 0
        assert (record["provider"], record["model"]) == ("openai", "house-model")
        assert record["prompt_tokens"] == 4
        value = await metric(
            client,
            "tollhouse_unpriced_requests_total",
            provider="openai",
            model="house-model",
        )
        assert value == 1.0
        # Priced requests are not counted as unpriced.
        await client.post("/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": HI})
        assert await metric(client, "tollhouse_unpriced_requests_total", model="gpt-4o-mini") == 0


async def test_unpriced_allowed_per_provider(make_settings, upstream):
    providers = {
        "local": {"base_url": f"{upstream.url}/v1", "allow_unpriced": True},
    }
    async with running(make_settings(providers=providers)) as (app, client):
        response = await client.post(
            "/v1/chat/completions", json={"model": "llama3.2", "messages": HI}
        )
        assert response.status_code == 200, response.text
        (record,) = await records(client, app)
        assert (record["provider"], record["model"], record["priced"]) == (
            "local",
            "llama3.2",
            False,
        )


async def test_refused_requests_leave_no_record(gateway, app):
    await gateway.post("/v1/chat/completions", content=b"{")
    await gateway.post("/v1/chat/completions", json={"model": "nope-xyz", "messages": HI})
    await gateway.post("/v1/chat/completions", json={"model": "openai/nope", "messages": HI})
    assert await records(gateway, app) == []


async def test_metrics_count_requests_tokens_and_cost(gateway, app):
    await gateway.post(
        "/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": HI, "max_tokens": 5}
    )
    labels = {"provider": "openai", "model": "gpt-4o-mini"}
    assert (
        await metric(gateway, "tollhouse_requests_total", endpoint="chat", status="200", **labels)
        == 1
    )
    assert await metric(gateway, "tollhouse_tokens_total", kind="prompt", **labels) == 4
    assert await metric(gateway, "tollhouse_tokens_total", kind="completion", **labels) == 5
    assert await metric(gateway, "tollhouse_cost_nanodollars_total", **labels) == 3600


# --- streams cut short ------------------------------------------------------------------


async def test_chat_stream_cut_short_is_charged_for_what_was_streamed(gateway, app, upstream):
    scenario(upstream, disconnect_after_chunks=3)
    body = {"model": "gpt-4o-mini", "messages": HI, "max_tokens": 10, "stream": True}
    response = await gateway.post("/v1/chat/completions", json=body)
    assert response.status_code == 200  # the status went out with the first byte
    payloads = sse_payloads(response.text)
    assert "[DONE]" not in payloads
    error = payloads[-1]["error"]
    assert set(error) == {"message", "type", "param", "code"}
    streamed = "".join(
        p["choices"][0]["delta"].get("content") or "" for p in payloads[:-1] if p.get("choices")
    )
    assert len(streamed.split()) == 3

    record = await only_record(gateway, app)
    assert (record["status"], record["http_status"], record["streamed"]) == ("error", 502, True)
    # No provider usage arrived: the bounds of what was sent (docs/ledger.md, "Streams").
    assert record["prompt_tokens"] == prompt_token_bound(body)
    # One token is at least one byte, and never more than max_tokens were asked for.
    assert record["completion_tokens"] == min(len(streamed.encode()), body["max_tokens"])
    price = app.services.catalog.get("openai", "gpt-4o-mini")
    assert record["cost"] == price.cost(record["prompt_tokens"], record["completion_tokens"])
    assert record["cost"] > 0


async def test_messages_stream_cut_short_is_charged_for_what_was_streamed(gateway, app, upstream):
    scenario(upstream, disconnect_after_chunks=3)
    body = {"model": "claude-haiku-4-5", "messages": HI, "max_tokens": 10, "stream": True}
    response = await gateway.post("/v1/messages", json=body)
    assert response.status_code == 200
    events = sse_events(response.text)
    assert events[-1][0] == "error"
    assert events[-1][1]["type"] == "error"
    deltas = [data for name, data in events if name == "content_block_delta"]
    assert len(deltas) == 3
    streamed = "".join(d["delta"]["text"] for d in deltas)

    record = await only_record(gateway, app)
    assert (record["status"], record["streamed"]) == ("error", True)
    assert record["prompt_tokens"] == 4  # message_start carried the real input count
    # message_start's output_tokens (1) is a placeholder; three tokens were streamed.
    assert record["completion_tokens"] >= 3
    assert record["completion_tokens"] <= len(streamed.encode())


async def test_chat_to_anthropic_stream_cut_short_is_charged_for_what_was_streamed(
    gateway, app, upstream
):
    scenario(upstream, disconnect_after_chunks=3)
    body = {"model": "claude-haiku-4-5", "messages": HI, "max_tokens": 10, "stream": True}
    response = await gateway.post("/v1/chat/completions", json=body)
    assert response.status_code == 200
    payloads = sse_payloads(response.text)
    assert "error" in payloads[-1]
    record = await only_record(gateway, app)
    assert record["status"] == "error"
    assert record["completion_tokens"] >= 3
