"""Against a real uvicorn on loopback: official SDKs, dropped streams, hang-ups, load."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import time
from typing import Any

import aiohttp
import anthropic
import httpx
import openai
import pytest
from tests.support import scenario, upstream_stats, wait_for

from tollhouse.devupstream import BackgroundServer, DevUpstreamOptions

from .helpers import (
    WEATHER_TOOL_ANTHROPIC,
    WEATHER_TOOL_OPENAI,
    chat_body,
    messages_body,
    sse_data,
)

# Typed Any: the SDKs want their TypedDicts; plain dicts are what users write.
USER: Any = [{"role": "user", "content": "Say something"}]


def openai_client(server: BackgroundServer, **kwargs: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="sk-dev", max_retries=0, **kwargs)


def anthropic_client(server: BackgroundServer) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=server.url, api_key="sk-dev", max_retries=0)


def test_openai_sdk_plain_stream_tools_embeddings(live: BackgroundServer) -> None:
    with openai_client(live) as client:
        completion = client.chat.completions.create(model="gpt-4o-mini", messages=USER)
        text = completion.choices[0].message.content
        assert text and completion.usage and completion.usage.completion_tokens == 16

        stream = client.chat.completions.create(
            model="gpt-4o-mini",
            messages=USER,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 16

        weather: Any = [{"role": "user", "content": "weather in Lima?"}]
        tooled = client.chat.completions.create(
            model="gpt-4o", messages=weather, tools=[WEATHER_TOOL_OPENAI]
        )
        calls = tooled.choices[0].message.tool_calls
        assert calls and calls[0].function.name == "get_weather"  # type: ignore[union-attr]

        vectors = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
        assert [len(d.embedding) for d in vectors.data] == [8, 8]
        assert [m.id for m in client.models.list()]


def test_openai_sdk_raises_typed_errors(live: BackgroundServer) -> None:
    scenario(live, fail_status=429)
    scenario(live, fail_status=503)
    with openai_client(live) as client:
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model="m", messages=USER)
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="m", messages=USER)
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model="m", messages=[])


def test_anthropic_sdk_plain_stream_tools(live: BackgroundServer) -> None:
    with anthropic_client(live) as client:
        message = client.messages.create(model="claude-haiku-4-5", max_tokens=8, messages=USER)
        assert message.stop_reason == "max_tokens"
        assert message.usage.output_tokens == 8

        with client.messages.stream(
            model="claude-haiku-4-5", max_tokens=8, messages=USER
        ) as stream:
            streamed = "".join(stream.text_stream)
            final = stream.get_final_message()
        assert streamed == message.content[0].text  # type: ignore[union-attr]
        assert final.usage.output_tokens == 8
        assert final.stop_reason == "max_tokens"

        with client.messages.stream(
            model="claude-haiku-4-5",
            max_tokens=64,
            messages=[{"role": "user", "content": "weather in Oslo?"}],
            tools=[WEATHER_TOOL_ANTHROPIC],
        ) as stream:
            tool_message = stream.get_final_message()
        block = tool_message.content[0]
        assert block.type == "tool_use"
        assert set(block.input) == {"location", "unit"}


def test_anthropic_sdk_raises_typed_errors(live: BackgroundServer) -> None:
    scenario(live, fail_status=529)
    with anthropic_client(live) as client:
        with pytest.raises(anthropic.APIStatusError) as failure:
            client.messages.create(model="m", max_tokens=8, messages=USER)
        assert failure.value.status_code == 529
        with pytest.raises(anthropic.BadRequestError):
            client.messages.create(model="m", max_tokens=8, messages=[])


def test_anthropic_sdk_rejects_wrong_key() -> None:
    with BackgroundServer(DevUpstreamOptions(api_key="right")) as server:
        with anthropic_client(server) as client, pytest.raises(anthropic.AuthenticationError):
            client.messages.create(model="m", max_tokens=8, messages=USER)
        with openai_client(server) as oai, pytest.raises(openai.AuthenticationError):
            oai.chat.completions.create(model="m", messages=USER)


@pytest.mark.parametrize(
    ("path", "body", "marker"),
    [
        ("/v1/chat/completions", chat_body(stream=True), b'"content":'),
        ("/v1/messages", messages_body(stream=True), b'"text_delta"'),
    ],
)
def test_injected_disconnect_drops_the_connection(
    live: BackgroundServer, path: str, body: dict[str, Any], marker: bytes
) -> None:
    scenario(live, disconnect_after_chunks=3)
    received = b""
    with (
        httpx.Client(base_url=live.url) as client,
        pytest.raises(httpx.RemoteProtocolError),
        client.stream("POST", path, json=body) as response,
    ):
        assert response.status_code == 200
        for piece in response.iter_bytes():
            received += piece
    assert received.count(marker) == 3 + (path == "/v1/chat/completions")  # role chunk
    assert b"[DONE]" not in received and b"message_stop" not in received
    assert upstream_stats(live)["disconnected_injected"] == 1


def test_openai_sdk_sees_dropped_stream_as_error(live: BackgroundServer) -> None:
    scenario(live, disconnect_after_chunks=0)
    with openai_client(live) as client:
        stream = client.chat.completions.create(model="m", messages=USER, stream=True)
        with pytest.raises((httpx.RemoteProtocolError, openai.APIError)):
            list(stream)


def test_client_hang_up_counts_as_cancelled(live: BackgroundServer) -> None:
    scenario(live, chunk_delay_ms=100)
    body = chat_body(stream=True)
    with (
        httpx.Client(base_url=live.url) as client,
        client.stream("POST", "/v1/chat/completions", json=body) as response,
    ):
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")
        wait_for(lambda: upstream_stats(live)["in_flight"] == 1)
        # Leaving the block closes the connection mid-stream.
    wait_for(lambda: upstream_stats(live)["cancelled"] == 1)
    counters = upstream_stats(live)
    assert counters["completed"] == 0
    assert counters["in_flight"] == 0


def test_hang_up_during_latency_counts_as_cancelled(live: BackgroundServer) -> None:
    scenario(live, latency_ms=2000)
    with (
        httpx.Client(base_url=live.url, timeout=0.2) as client,
        pytest.raises(httpx.ReadTimeout),
    ):
        client.post("/v1/messages", json=messages_body(stream=True))
    wait_for(lambda: upstream_stats(live)["cancelled"] == 1)


def test_option_disconnect_and_pacing() -> None:
    options = DevUpstreamOptions(disconnect_after_chunks=1, chunk_delay_ms=20)
    with BackgroundServer(options) as server, httpx.Client(base_url=server.url) as client:
        started = time.perf_counter()
        with pytest.raises(httpx.RemoteProtocolError):
            client.post("/v1/chat/completions", json=chat_body(stream=True))
        assert time.perf_counter() - started >= 0.02
        plain = client.post("/v1/chat/completions", json=chat_body())
        assert plain.status_code == 200


async def test_hundreds_of_concurrent_streams(live: BackgroundServer) -> None:
    # aiohttp, because httpx's connection pool, not the server, is slow at this fan-out.
    connector = aiohttp.TCPConnector(limit=300)
    async with aiohttp.ClientSession(base_url=live.url, connector=connector) as session:

        async def one(i: int) -> str:
            body = chat_body(f"question {i % 7}", stream=True)
            async with session.post("/v1/chat/completions", json=body) as response:
                return await response.text()

        bodies = await asyncio.gather(*(one(i) for i in range(300)))
    assert all(b.endswith("data: [DONE]\n\n") for b in bodies)
    texts = {
        "".join(c["choices"][0]["delta"]["content"] for c in sse_data(b)[1:-2]) for b in bodies
    }
    assert len(texts) == 7  # same question, same answer
    counters = upstream_stats(live)
    assert counters["completed"] == 300
    assert counters["cancelled"] == 0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.e2e
def test_serve_in_a_subprocess() -> None:
    """``serve`` as the CLI runs it: uvloop + httptools, no access log, api key on."""
    port = free_port()
    code = (
        "from tollhouse.devupstream import DevUpstreamOptions, serve; "
        f"serve(DevUpstreamOptions(api_key='k', disconnect_after_chunks=2), port={port})"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 10
        while True:
            try:
                httpx.get(f"{url}/health").raise_for_status()
                break
            except httpx.TransportError:
                assert process.poll() is None and time.monotonic() < deadline
                time.sleep(0.05)
        with openai.OpenAI(base_url=f"{url}/v1", api_key="k", max_retries=0) as client:
            assert client.chat.completions.create(model="m", messages=USER).choices
        with httpx.Client(base_url=url, headers={"x-api-key": "k"}) as raw:
            with pytest.raises(httpx.RemoteProtocolError):
                raw.post("/v1/messages", json=messages_body(stream=True))
            assert raw.post("/v1/messages", json=messages_body()).status_code == 200
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=10)
    log = stderr.decode()
    assert "Uvicorn running" in log
    assert "Traceback" not in log and "InjectedDisconnect" not in log
    assert "POST /v1" not in log  # access log off
