"""Retries, fallback chains and clients that leave: what the SDK sees and what is recorded."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest
from tests.support import LiveServer, scenario, upstream_stats, wait_for

from tollhouse.config import Settings
from tollhouse.devupstream import BackgroundServer

from .helpers import (
    CLAUDE,
    GPT,
    HELLO,
    assert_record,
    ledger,
    only_record,
)

ROUTES = [{"name": "smart", "targets": [f"anthropic/{CLAUDE}", f"openai/{GPT}"]}]


def test_retries_hide_transient_upstream_failures(
    openai_client: openai.OpenAI, live_gateway: LiveServer, upstream: BackgroundServer
) -> None:
    scenario(upstream, fail_status=503, count=2)

    completion = openai_client.chat.completions.create(model=GPT, messages=HELLO, max_tokens=4)

    assert completion.usage is not None and completion.usage.completion_tokens == 4
    seen = upstream_stats(upstream)
    assert seen["inference_requests"] == 3
    assert seen["failed_injected"] == 2
    assert_record(
        only_record(live_gateway),
        endpoint="chat",
        provider="openai",
        model=GPT,
        streamed=False,
        prompt=completion.usage.prompt_tokens,
        completion=4,
    )
    metrics = httpx.get(f"{live_gateway.url}/metrics").text
    assert 'tollhouse_upstream_errors_total{kind="503",provider="openai"} 2.0' in metrics


@pytest.fixture
def routed_gateway(make_settings: Callable[..., Settings]) -> Iterator[LiveServer]:
    with LiveServer(make_settings(models=ROUTES)) as server:
        yield server


@pytest.fixture
def routed_client(routed_gateway: LiveServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(
        base_url=f"{routed_gateway.url}/v1", api_key="sk-routed", max_retries=0
    ) as client:
        yield client


def test_route_is_served_by_its_first_target(
    routed_client: openai.OpenAI, routed_gateway: LiveServer, upstream: BackgroundServer
) -> None:
    raw = routed_client.chat.completions.with_raw_response.create(
        model="smart", messages=HELLO, max_tokens=3
    )
    completion = raw.parse()

    assert raw.headers["x-tollhouse-target"] == f"anthropic/{CLAUDE}"
    assert completion.usage is not None
    assert upstream_stats(upstream)["by_path"] == {"/v1/messages": 1}
    assert_record(
        only_record(routed_gateway),
        endpoint="chat",
        provider="anthropic",
        model=CLAUDE,
        streamed=False,
        prompt=completion.usage.prompt_tokens,
        completion=3,
    )


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_fallback_to_the_next_target_when_the_first_is_down(
    routed_client: openai.OpenAI,
    routed_gateway: LiveServer,
    upstream: BackgroundServer,
    stream: bool,
) -> None:
    # The first target gets its request and both retries; all three fail.
    scenario(upstream, fail_status=503, count=3)

    raw = routed_client.chat.completions.with_raw_response.create(
        model="smart",
        messages=HELLO,
        max_tokens=6,
        stream=stream,
        stream_options={"include_usage": True} if stream else openai.omit,
    )
    assert raw.headers["x-tollhouse-target"] == f"openai/{GPT}"
    parsed: Any = raw.parse()
    usage = list(parsed)[-1].usage if stream else parsed.usage

    assert usage is not None and usage.completion_tokens == 6
    assert upstream_stats(upstream)["by_path"] == {"/v1/messages": 3, "/v1/chat/completions": 1}
    assert_record(
        only_record(routed_gateway),
        endpoint="chat",
        provider="openai",
        model=GPT,
        streamed=stream,
        prompt=usage.prompt_tokens,
        completion=6,
    )


def test_no_fallback_on_the_clients_own_error(
    routed_client: openai.OpenAI, routed_gateway: LiveServer, upstream: BackgroundServer
) -> None:
    # A 400 would be a 400 from every target: falling back only spends money.
    scenario(upstream, fail_status=400, count=1)

    with pytest.raises(openai.BadRequestError):
        routed_client.chat.completions.create(model="smart", messages=HELLO, max_tokens=3)

    assert upstream_stats(upstream)["by_path"] == {"/v1/messages": 1}
    record = only_record(routed_gateway)
    assert (record["status"], record["http_status"], record["cost"]) == ("error", 400, 0)


def test_every_target_down_is_502_recorded_once(
    routed_client: openai.OpenAI, routed_gateway: LiveServer, upstream: BackgroundServer
) -> None:
    scenario(upstream, fail_status=503, count=6)

    with pytest.raises(openai.InternalServerError) as caught:
        routed_client.chat.completions.create(model="smart", messages=HELLO, max_tokens=3)

    assert caught.value.status_code == 502
    assert upstream_stats(upstream)["inference_requests"] == 6
    record = only_record(routed_gateway)
    assert (record["status"], record["http_status"], record["cost"]) == ("error", 502, 0)


def _content_of(line: str) -> str | None:
    if not line.startswith("data: ") or line == "data: [DONE]":
        return None
    chunk: Any = orjson.loads(line[len("data: ") :])
    choices = chunk.get("choices") or [{}]
    content: str | None = (choices[0].get("delta") or {}).get("content")
    return content


@pytest.mark.parametrize("model", [GPT, CLAUDE])
def test_client_disconnect_cancels_the_upstream_request(
    live_gateway: LiveServer, upstream: BackgroundServer, model: str
) -> None:
    scenario(upstream, chunk_delay_ms=200, count=1)
    body = {"model": model, "messages": HELLO, "stream": True}
    received: list[str] = []

    with (
        httpx.Client(timeout=10) as client,
        client.stream("POST", f"{live_gateway.url}/v1/chat/completions", json=body) as response,
    ):
        assert response.status_code == 200
        for line in response.iter_lines():
            content = _content_of(line)
            if content:
                received.append(content)
            if len(received) == 2:
                break  # leave mid-stream: the response closes with the block

    wait_for(
        lambda: upstream_stats(upstream)["cancelled"] >= 1, timeout=2.0, what="upstream cancel"
    )
    assert upstream_stats(upstream)["completed"] == 0
    wait_for(lambda: len(ledger(live_gateway)) == 1, timeout=2.0, what="usage record")
    record = only_record(live_gateway)
    assert (record["status"], record["http_status"], record["streamed"]) == (
        "cancelled",
        499,
        True,
    )
    provider = "openai" if model == GPT else "anthropic"
    assert (record["provider"], record["model"]) == (provider, model)
    # Charged for what was streamed (docs/ledger.md): at least one token per content chunk
    # the client received; Anthropic's message_start output_tokens=1 is a placeholder.
    assert record["completion_tokens"] >= len(received), "cancelled stream undercharged"
    assert_record(
        record,
        endpoint="chat",
        provider=provider,
        model=model,
        streamed=True,
        prompt=record["prompt_tokens"],
        completion=record["completion_tokens"],
        status="cancelled",
        http_status=499,
    )
