"""Errors reach both SDKs as the exception class a user would catch, and are metered.

Refusals before any provider is asked (unknown model, unpriced model, bad JSON) leave
no usage record; upstream failures leave exactly one ``error`` record per request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import anthropic
import httpx
import openai
import orjson
import pytest
from tests.support import LiveServer, scenario, upstream_stats

from tollhouse.devupstream import BackgroundServer

from .helpers import (
    CLAUDE,
    CURRENT_CLAUDE,
    GPT,
    HELLO,
    assert_record,
    assert_refused_without_record,
    dev_prompt_tokens,
    only_record,
)

PROVIDER = {GPT: "openai", CLAUDE: "anthropic", CURRENT_CLAUDE: "anthropic"}


def _chat(client: openai.OpenAI, model: str = GPT) -> Any:
    return client.chat.completions.create(model=model, messages=HELLO, max_tokens=8)


def _message(client: anthropic.Anthropic, model: str = GPT) -> Any:
    return client.messages.create(model=model, max_tokens=8, messages=HELLO)


def _assert_openai_error_body(body: Any, code: str) -> None:
    # openai.APIStatusError.body is the "error" object of the envelope.
    assert isinstance(body, dict)
    assert set(body) >= {"message", "type", "param", "code"}, body
    assert body["code"] == code and body["message"]


# --- refused before any provider is asked -------------------------------------------


def test_refusal_of_a_stream_is_json_before_any_event(
    openai_client: openai.OpenAI, live_gateway: LiveServer
) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        openai_client.chat.completions.create(
            model="no-such-model-anywhere", messages=HELLO, stream=True
        )

    assert caught.value.response.headers["content-type"].startswith("application/json")
    _assert_openai_error_body(caught.value.body, "model_not_found")
    assert_refused_without_record(live_gateway)


def test_openai_unknown_model_is_not_found(
    openai_client: openai.OpenAI, live_gateway: LiveServer, upstream: BackgroundServer
) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        _chat(openai_client, "no-such-model-anywhere")

    assert caught.value.status_code == 404
    _assert_openai_error_body(caught.value.body, "model_not_found")
    assert caught.value.response.headers.get("x-request-id")
    assert upstream_stats(upstream)["requests"] == 0
    assert_refused_without_record(live_gateway)


def test_openai_unpriced_model_is_bad_request(
    openai_client: openai.OpenAI, live_gateway: LiveServer, upstream: BackgroundServer
) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        _chat(openai_client, "openai/some-unpriced-model")

    assert caught.value.code == "model_not_priced"
    assert caught.value.param == "model"
    _assert_openai_error_body(caught.value.body, "model_not_priced")
    assert "never free" in caught.value.message
    assert upstream_stats(upstream)["requests"] == 0
    assert_refused_without_record(live_gateway)


@pytest.mark.parametrize(
    "content",
    [b'{"model": "gpt-4o-mini", "messages": [', b"not json at all", b"", b'["a list"]'],
    ids=["truncated", "garbage", "empty", "not-an-object"],
)
def test_invalid_json_body_is_openai_shaped_400(
    live_gateway: LiveServer, upstream: BackgroundServer, content: bytes
) -> None:
    response = httpx.post(
        f"{live_gateway.url}/v1/chat/completions",
        content=content,
        headers={"content-type": "application/json", "authorization": "Bearer sk-x"},
    )

    assert response.status_code == 400
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["type"] == "invalid_request_error"
    assert body["error"]["code"] == "invalid_json"
    assert upstream_stats(upstream)["requests"] == 0
    assert_refused_without_record(live_gateway)


def test_anthropic_unknown_model_is_not_found(
    anthropic_client: anthropic.Anthropic, live_gateway: LiveServer
) -> None:
    with pytest.raises(anthropic.NotFoundError) as caught:
        _message(anthropic_client, "no-such-model-anywhere")

    assert caught.value.status_code == 404
    body: Any = caught.value.body
    assert body["type"] == "error" and body["error"]["type"] == "not_found_error"
    assert_refused_without_record(live_gateway)


def test_anthropic_unpriced_model_is_bad_request(
    anthropic_client: anthropic.Anthropic, live_gateway: LiveServer
) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        _message(anthropic_client, "anthropic/some-unpriced-model")

    body: Any = caught.value.body
    assert body["error"]["type"] == "invalid_request_error"
    assert "never free" in body["error"]["message"]
    assert_refused_without_record(live_gateway)


def test_anthropic_invalid_json_is_anthropic_shaped_400(live_gateway: LiveServer) -> None:
    response = httpx.post(
        f"{live_gateway.url}/v1/messages",
        content=b"{nope",
        headers={"content-type": "application/json", "x-api-key": "sk-x"},
    )

    assert response.status_code == 400
    body = response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error" and body["error"]["message"]
    assert_refused_without_record(live_gateway)


# --- the provider fails --------------------------------------------------------------


@dataclass(frozen=True)
class UpstreamFailure:
    fail_status: int  # what the dev upstream answers
    times: int  # for this many requests in a row
    client_status: int  # what the client gets from Tollhouse
    attempts: int  # requests the upstream sees (default max_retries=2)
    openai_error: type[openai.APIStatusError]
    anthropic_error: type[anthropic.APIStatusError]


FAILURES = {
    "5xx-after-retries-is-502": UpstreamFailure(
        500, 10, 502, 3, openai.InternalServerError, anthropic.InternalServerError
    ),
    "400-passed-through": UpstreamFailure(
        400, 1, 400, 1, openai.BadRequestError, anthropic.BadRequestError
    ),
    "429-after-retries": UpstreamFailure(
        429, 10, 429, 3, openai.RateLimitError, anthropic.RateLimitError
    ),
}


@pytest.fixture(params=list(FAILURES.values()), ids=list(FAILURES))
def failure(request: pytest.FixtureRequest, upstream: BackgroundServer) -> UpstreamFailure:
    case: UpstreamFailure = request.param
    scenario(upstream, fail_status=case.fail_status, count=case.times)
    return case


def _assert_failure_recorded(
    live: LiveServer,
    upstream: BackgroundServer,
    failure: UpstreamFailure,
    *,
    endpoint: str,
    provider: str,
    model: str,
    streamed: bool = False,
) -> None:
    record = only_record(live)
    assert_record(
        record,
        endpoint=endpoint,
        provider=provider,
        model=model,
        streamed=streamed,
        prompt=0,
        completion=0,
        status="error",
        http_status=failure.client_status,
    )
    assert record["cost"] == 0
    assert f"answered {failure.fail_status}" in record["error"]
    assert upstream_stats(upstream)["inference_requests"] == failure.attempts


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_openai_sdk_upstream_failure(
    openai_client: openai.OpenAI,
    live_gateway: LiveServer,
    upstream: BackgroundServer,
    failure: UpstreamFailure,
    stream: bool,
) -> None:
    # A stream that fails before its first byte is a plain JSON error, so the SDK
    # raises from create() itself, exactly as for a plain request.
    with pytest.raises(failure.openai_error) as caught:
        openai_client.chat.completions.create(
            model=GPT, messages=HELLO, max_tokens=8, stream=stream
        )

    error = caught.value
    assert error.status_code == failure.client_status
    assert error.response.headers["content-type"].startswith("application/json")
    assert isinstance(error.body, dict) and error.body["message"]
    assert set(error.body) >= {"message", "type", "param", "code"}
    if failure.client_status == 429:
        assert error.response.headers.get("retry-after") is not None
    _assert_failure_recorded(
        live_gateway,
        upstream,
        failure,
        endpoint="chat",
        provider="openai",
        model=GPT,
        streamed=stream,
    )


@pytest.mark.parametrize("model", [CURRENT_CLAUDE, GPT])
def test_anthropic_sdk_upstream_failure(
    anthropic_client: anthropic.Anthropic,
    live_gateway: LiveServer,
    upstream: BackgroundServer,
    failure: UpstreamFailure,
    model: str,
) -> None:
    with pytest.raises(failure.anthropic_error) as caught:
        _message(anthropic_client, model)

    error = caught.value
    assert error.status_code == failure.client_status
    body: Any = error.body
    assert body["type"] == "error" and body["error"]["message"]
    _assert_failure_recorded(
        live_gateway, upstream, failure, endpoint="messages", provider=PROVIDER[model], model=model
    )


# --- the provider drops a stream mid-way ---------------------------------------------

UNDERCHARGE = (
    "a stream cut short must be charged for what was streamed (docs/ledger.md): at least "
    "one token per content chunk sent; Anthropic's message_start carries only a "
    "placeholder output_tokens=1"
)


@pytest.mark.parametrize("model", [GPT, CLAUDE])
def test_openai_stream_cut_by_provider_raises_and_is_charged_for_what_was_sent(
    openai_client: openai.OpenAI, live_gateway: LiveServer, upstream: BackgroundServer, model: str
) -> None:
    scenario(upstream, disconnect_after_chunks=3, count=1)
    received: list[str] = []
    stream = openai_client.chat.completions.create(model=model, messages=HELLO, stream=True)
    with pytest.raises(openai.APIError) as caught:
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                received.append(chunk.choices[0].delta.content)

    assert len(received) == 3, "the chunks before the cut reach the client"
    assert "stream broke" in caught.value.message
    assert upstream_stats(upstream)["disconnected_injected"] == 1
    record = only_record(live_gateway)
    assert record["completion_tokens"] >= len(received), UNDERCHARGE
    if model == GPT:
        # No provider usage arrived, so output is bounded by the bytes streamed.
        assert record["completion_tokens"] == len("".join(received).encode())
    assert record["prompt_tokens"] >= dev_prompt_tokens(HELLO)
    assert_record(
        record,
        endpoint="chat",
        provider=PROVIDER[model],
        model=model,
        streamed=True,
        prompt=record["prompt_tokens"],
        completion=record["completion_tokens"],
        status="error",
        http_status=502,
    )


@pytest.mark.parametrize("model", [GPT, CLAUDE])
def test_stream_cut_by_provider_ends_with_an_openai_error_event(
    live_gateway: LiveServer, upstream: BackgroundServer, model: str
) -> None:
    scenario(upstream, disconnect_after_chunks=3, count=1)
    body = {"model": model, "messages": HELLO, "stream": True}

    response = httpx.post(f"{live_gateway.url}/v1/chat/completions", json=body)

    assert response.status_code == 200  # the status went out with the first byte
    events = [block for block in response.text.split("\n\n") if block]
    assert all(block.startswith("data: ") for block in events)
    assert "data: [DONE]" not in events, "a broken stream must not look complete"
    last = orjson.loads(events[-1][len("data: ") :])
    assert set(last) == {"error"}
    assert set(last["error"]) == {"message", "type", "param", "code"}
    assert last["error"]["type"] == "api_error"
    assert last["error"]["code"] == "upstream_error"
    assert only_record(live_gateway)["status"] == "error"


@pytest.mark.parametrize("model", [CURRENT_CLAUDE, GPT])
def test_anthropic_stream_cut_by_provider_raises_and_is_charged_for_what_was_sent(
    anthropic_client: anthropic.Anthropic,
    live_gateway: LiveServer,
    upstream: BackgroundServer,
    model: str,
) -> None:
    scenario(upstream, disconnect_after_chunks=3, count=1)
    received: list[str] = []
    with (
        pytest.raises(anthropic.APIStatusError) as caught,
        anthropic_client.messages.stream(model=model, max_tokens=64, messages=HELLO) as stream,
    ):
        received.extend(stream.text_stream)

    assert len(received) == 3, "the chunks before the cut reach the client"
    body: Any = caught.value.body
    assert body["type"] == "error" and "stream broke" in body["error"]["message"]
    record = only_record(live_gateway)
    assert record["completion_tokens"] >= len(received), UNDERCHARGE
    assert_record(
        record,
        endpoint="messages",
        provider=PROVIDER[model],
        model=model,
        streamed=True,
        prompt=record["prompt_tokens"],
        completion=record["completion_tokens"],
        status="error",
        http_status=502,
    )
