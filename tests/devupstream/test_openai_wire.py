"""OpenAI shapes, in-process: chat (plain, SSE, tool calls), embeddings, models, errors."""

from __future__ import annotations

import base64
import math
import struct
from typing import Any

import httpx
import orjson
import pytest

from .helpers import (
    CALCULATE_ARGUMENTS,
    PYTHON_TOOL_OPENAI,
    WEATHER_TOOL_OPENAI,
    chat_body,
    sse_data,
)

CHAT = "/v1/chat/completions"


async def test_chat_plain_shape(client: httpx.AsyncClient) -> None:
    response = await client.post(CHAT, json=chat_body())
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-request-id"].startswith("req_")
    body = response.json()
    assert body["id"].startswith("chatcmpl-")
    assert body["object"] == "chat.completion"
    assert isinstance(body["created"], int)
    assert body["model"] == "gpt-4o-mini"
    assert body["system_fingerprint"]
    (choice,) = body["choices"]
    assert choice["index"] == 0
    assert choice["finish_reason"] == "stop"
    assert choice["message"]["role"] == "assistant"
    words = choice["message"]["content"].split(" ")
    assert len(words) == 16
    usage = body["usage"]
    assert usage["completion_tokens"] == 16
    assert usage["total_tokens"] == usage["prompt_tokens"] + 16
    assert usage["prompt_tokens_details"] == {"cached_tokens": 0}


async def test_chat_is_deterministic_apart_from_ids(client: httpx.AsyncClient) -> None:
    first = (await client.post(CHAT, json=chat_body("same question"))).json()
    second = (await client.post(CHAT, json=chat_body("same question"))).json()
    other = (await client.post(CHAT, json=chat_body("another question"))).json()
    assert first["id"] != second["id"]
    for body in (first, second):
        del body["id"], body["created"]
    assert first == second
    assert other["choices"][0]["message"]["content"] != first["choices"][0]["message"]["content"]


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
async def test_chat_max_tokens_truncates(client: httpx.AsyncClient, field: str) -> None:
    body = (await client.post(CHAT, json={**chat_body(), field: 3})).json()
    assert body["choices"][0]["finish_reason"] == "length"
    assert len(body["choices"][0]["message"]["content"].split(" ")) == 3
    assert body["usage"]["completion_tokens"] == 3


async def test_chat_stream_one_word_per_chunk(client: httpx.AsyncClient) -> None:
    plain = (await client.post(CHAT, json=chat_body(max_tokens=5))).json()
    response = await client.post(CHAT, json=chat_body(max_tokens=5, stream=True))
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_data(response.text)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    words = [c["choices"][0]["delta"]["content"] for c in chunks[1:-1]]
    assert len(words) == 5
    assert "".join(words) == plain["choices"][0]["message"]["content"]
    assert chunks[-1]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "length",
    }
    assert all("usage" not in c for c in chunks)


async def test_chat_stream_include_usage(client: httpx.AsyncClient) -> None:
    body = chat_body(stream=True, stream_options={"include_usage": True})
    events = sse_data((await client.post(CHAT, json=body)).text)
    assert events[-1] == "[DONE]"
    usage_chunk = events[-2]
    assert usage_chunk["choices"] == []
    assert usage_chunk["usage"]["completion_tokens"] == 16
    assert all(c["usage"] is None for c in events[:-2])


async def test_chat_tool_call_plain(client: httpx.AsyncClient) -> None:
    body = chat_body("What is the weather in Paris?", tools=[WEATHER_TOOL_OPENAI])
    choice = (await client.post(CHAT, json=body)).json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["id"].startswith("call_")
    assert call["type"] == "function"
    assert call["function"]["name"] == "get_weather"
    arguments = orjson.loads(call["function"]["arguments"])
    assert set(arguments) == {"location", "unit"}
    assert arguments["unit"] == "celsius"


async def test_chat_tool_call_stream_fragments(client: httpx.AsyncClient) -> None:
    body = chat_body("Weather please", tools=[WEATHER_TOOL_OPENAI])
    plain = (await client.post(CHAT, json=body)).json()
    streamed = (await client.post(CHAT, json={**body, "stream": True})).text
    chunks = sse_data(streamed)[:-1]
    opening = chunks[0]["choices"][0]["delta"]["tool_calls"][0]
    assert opening["index"] == 0
    assert opening["id"].startswith("call_")
    assert opening["function"] == {"name": "get_weather", "arguments": ""}
    fragments = [c["choices"][0]["delta"]["tool_calls"][0] for c in chunks[1:-1]]
    assert len(fragments) > 1
    assert all(f["index"] == 0 and set(f) == {"index", "function"} for f in fragments)
    arguments = "".join(f["function"]["arguments"] for f in fragments)
    assert arguments == plain["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert plain["usage"]["completion_tokens"] == len(fragments)


async def test_tool_call_never_exceeds_max_tokens(client: httpx.AsyncClient) -> None:
    body = chat_body("weather?", tools=[WEATHER_TOOL_OPENAI], max_tokens=2, stream=True)
    chunks = sse_data((await client.post(CHAT, json=body)).text)[:-1]
    fragments = [c["choices"][0]["delta"]["tool_calls"][0]["function"] for c in chunks[1:-1]]
    assert len(fragments) == 2
    orjson.loads("".join(f["arguments"] for f in fragments))


@pytest.mark.parametrize(
    ("content", "tool_choice", "calls"),
    [
        ("tell me a joke", None, False),
        ("tell me a joke", "required", True),
        ("tell me a joke", {"type": "function", "function": {"name": "get_weather"}}, True),
        ("how is the WEATHER", None, True),
        ("how is the weather", "none", False),
    ],
)
async def test_tool_trigger(
    client: httpx.AsyncClient, content: str, tool_choice: object, calls: bool
) -> None:
    body = chat_body(content, tools=[WEATHER_TOOL_OPENAI])
    if tool_choice is not None:
        body["tool_choice"] = tool_choice
    choice = (await client.post(CHAT, json=body)).json()["choices"][0]
    assert (choice["finish_reason"] == "tool_calls") is calls


async def test_tool_result_turn_answers_in_text(client: httpx.AsyncClient) -> None:
    messages = [
        {"role": "user", "content": "weather in Paris?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"location":"Paris"}'},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": "weather: sunny, 21C"},
    ]
    body = {"model": "gpt-4o", "messages": messages, "tools": [WEATHER_TOOL_OPENAI]}
    choice = (await client.post(CHAT, json=body)).json()["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert choice["message"]["content"] == "The result is weather: sunny, 21C."


@pytest.mark.parametrize(
    "tools",
    [[PYTHON_TOOL_OPENAI], [WEATHER_TOOL_OPENAI, PYTHON_TOOL_OPENAI]],
    ids=["python-only", "python-second"],
)
async def test_calculate_calls_python(client: httpx.AsyncClient, tools: list[Any]) -> None:
    body = chat_body("Calculate 2 + 2", tools=tools)
    result = (await client.post(CHAT, json=body)).json()
    choice = result["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["function"] == {"name": "python", "arguments": CALCULATE_ARGUMENTS}
    assert result["usage"]["completion_tokens"] == 3  # 24 characters, 8 per fragment


async def test_calculate_stream_fragments_join_to_the_code(client: httpx.AsyncClient) -> None:
    body = chat_body(
        "Calculate 2 + 2",
        tools=[WEATHER_TOOL_OPENAI, PYTHON_TOOL_OPENAI],
        stream=True,
        stream_options={"include_usage": True},
    )
    events = sse_data((await client.post(CHAT, json=body)).text)
    chunks, usage = events[:-2], events[-2]["usage"]
    opening = chunks[0]["choices"][0]["delta"]["tool_calls"][0]
    assert opening["function"] == {"name": "python", "arguments": ""}
    fragments = [c["choices"][0]["delta"]["tool_calls"][0]["function"] for c in chunks[1:-1]]
    assert len(fragments) > 1
    assert "".join(f["arguments"] for f in fragments) == CALCULATE_ARGUMENTS
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    assert usage["completion_tokens"] == len(fragments)


async def test_calculate_without_python_calls_the_first_tool(client: httpx.AsyncClient) -> None:
    body = chat_body("Calculate 2 + 2", tools=[WEATHER_TOOL_OPENAI])
    choice = (await client.post(CHAT, json=body)).json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    (call,) = choice["message"]["tool_calls"]
    assert call["function"]["name"] == "get_weather"
    arguments = orjson.loads(call["function"]["arguments"])
    assert set(arguments) == {"location", "unit"}
    assert arguments["unit"] == "celsius"


@pytest.mark.parametrize(
    "content",
    [
        "calculate the tip",
        "Can you calculate?",
        "calculate the sum of 2 and 3",
        "recalculate 2 + 2",
    ],
)
async def test_calculate_without_arithmetic_does_not_call(
    client: httpx.AsyncClient, content: str
) -> None:
    body = chat_body(content, tools=[PYTHON_TOOL_OPENAI])
    choice = (await client.post(CHAT, json=body)).json()["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert len(choice["message"]["content"].split(" ")) == 16


def calculate_loop(result: object, **extra: Any) -> dict[str, Any]:
    """An agent loop's second request: "Calculate 2 + 2", the python call, its result."""
    call = {"name": "python", "arguments": CALCULATE_ARGUMENTS}
    messages = [
        {"role": "user", "content": "Calculate 2 + 2"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "call_1", "type": "function", "function": call}],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": result},
    ]
    return {"model": "gpt-4o", "messages": messages, "tools": [PYTHON_TOOL_OPENAI], **extra}


LONG_RESULT = " ".join(str(n) for n in range(20))


@pytest.mark.parametrize(
    ("result", "max_tokens", "text", "finish"),
    [
        ("4\n", None, "The result is 4.", "stop"),
        ([{"type": "text", "text": "4\n"}], 4, "The result is 4.", "stop"),
        ("  2 + 2\n=\t4\n", None, "The result is 2 + 2 = 4.", "stop"),
        ("4\n", 3, "The result is", "length"),
        ("4\n", 1, "The", "length"),
        # Cut to the usual 16 words: not by the limit, so "stop".
        (LONG_RESULT, None, "The result is " + " ".join(map(str, range(13))), "stop"),
        (LONG_RESULT, 10, "The result is " + " ".join(map(str, range(7))), "length"),
    ],
)
async def test_tool_result_is_the_answer(
    client: httpx.AsyncClient, result: object, max_tokens: int | None, text: str, finish: str
) -> None:
    extra = {} if max_tokens is None else {"max_tokens": max_tokens}
    plain = (await client.post(CHAT, json=calculate_loop(result, **extra))).json()
    choice = plain["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": text, "refusal": None}
    assert choice["finish_reason"] == finish
    assert plain["usage"]["completion_tokens"] == len(text.split(" "))

    body = calculate_loop(result, stream=True, stream_options={"include_usage": True}, **extra)
    events = sse_data((await client.post(CHAT, json=body)).text)
    chunks, usage = events[:-2], events[-2]["usage"]
    pieces = [c["choices"][0]["delta"]["content"] for c in chunks[1:-1]]
    assert "".join(pieces) == text
    assert chunks[-1]["choices"][0]["finish_reason"] == finish
    assert usage["completion_tokens"] == len(pieces)
    assert usage == plain["usage"]


async def test_embeddings_shapes_and_determinism(client: httpx.AsyncClient) -> None:
    body = {"model": "text-embedding-3-small", "input": ["alpha", "beta", "alpha"]}
    result = (await client.post("/v1/embeddings", json=body)).json()
    assert result["object"] == "list"
    assert result["model"] == "text-embedding-3-small"
    assert [d["index"] for d in result["data"]] == [0, 1, 2]
    vectors = [d["embedding"] for d in result["data"]]
    assert all(len(v) == 8 for v in vectors)
    assert vectors[0] == vectors[2] != vectors[1]
    assert math.isclose(math.sqrt(sum(x * x for x in vectors[0])), 1.0, abs_tol=1e-4)
    assert result["usage"]["prompt_tokens"] == result["usage"]["total_tokens"] >= 1
    single = (await client.post("/v1/embeddings", json={**body, "input": "alpha"})).json()
    assert single["data"][0]["embedding"] == vectors[0]


async def test_embeddings_dimensions_tokens_and_base64(client: httpx.AsyncClient) -> None:
    body = {"model": "m", "input": [[1, 2, 3], [4, 5]], "dimensions": 32}
    floats = (await client.post("/v1/embeddings", json=body)).json()
    assert [len(d["embedding"]) for d in floats["data"]] == [32, 32]
    assert floats["usage"]["prompt_tokens"] == 5
    flat = (await client.post("/v1/embeddings", json={**body, "input": [1, 2, 3]})).json()
    assert flat["data"][0]["embedding"] == floats["data"][0]["embedding"]
    encoded = {**body, "encoding_format": "base64"}
    b64 = (await client.post("/v1/embeddings", json=encoded)).json()
    raw = base64.b64decode(b64["data"][0]["embedding"])
    decoded = struct.unpack("<32f", raw)
    assert all(
        math.isclose(a, b, abs_tol=1e-6)
        for a, b in zip(decoded, floats["data"][0]["embedding"], strict=True)
    )


async def test_models_list(client: httpx.AsyncClient) -> None:
    body = (await client.get("/v1/models")).json()
    assert body["object"] == "list"
    assert len(body["data"]) >= 4
    assert all(m["object"] == "model" and m["id"] and m["owned_by"] for m in body["data"])
    anthropic = (await client.get("/v1/models", headers={"anthropic-version": "2023-06-01"})).json()
    assert anthropic["has_more"] is False
    assert all(m["type"] == "model" for m in anthropic["data"])


def assert_openai_error(response: httpx.Response, status: int) -> dict[str, object]:
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    return error  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        (CHAT, {"messages": [{"role": "user", "content": "x"}]}, "model"),
        (CHAT, {"model": "m", "messages": []}, "messages"),
        (CHAT, {"model": "m", "messages": ["x"]}, "messages"),
        (CHAT, chat_body(max_tokens=0), "max_tokens"),
        (CHAT, chat_body(max_tokens="5"), "max_tokens"),
        (CHAT, chat_body(tools="x"), "tools"),
        (CHAT, [1, 2], None),
        ("/v1/embeddings", {"model": "m", "input": []}, "input"),
        ("/v1/embeddings", {"model": "m", "input": [1.5]}, "input"),
        ("/v1/embeddings", {"model": "m", "input": "x", "dimensions": 10**6}, "dimensions"),
        ("/v1/embeddings", {"model": "m", "input": "x", "encoding_format": "hex"}, None),
    ],
)
async def test_bad_requests_are_400(
    client: httpx.AsyncClient, path: str, body: object, param: str | None
) -> None:
    error = assert_openai_error(await client.post(path, json=body), 400)
    assert error["type"] == "invalid_request_error"
    if param is not None:
        assert error["param"] == param


async def test_invalid_json_is_400(client: httpx.AsyncClient) -> None:
    assert_openai_error(await client.post(CHAT, content=b"{nope"), 400)


async def test_unknown_path_and_method(client: httpx.AsyncClient) -> None:
    error = assert_openai_error(await client.post("/chat/completions", json={}), 404)
    assert "/v1/chat/completions" in str(error["message"])
    error = assert_openai_error(await client.post("/v1/v1/messages", json={}), 404)
    assert "did you mean /v1/messages" in str(error["message"])
    assert_openai_error(await client.get(CHAT), 405)
    assert_openai_error(await client.post("/v1/models"), 405)


async def test_health(client: httpx.AsyncClient) -> None:
    response = await client.get("/health")
    assert response.json() == {"status": "ok"}
