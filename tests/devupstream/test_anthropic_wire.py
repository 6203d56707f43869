"""Anthropic Messages shapes, in-process: plain, event sequence, tool use, errors."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

from .helpers import (
    CALCULATE_ARGUMENTS,
    PYTHON_TOOL_ANTHROPIC,
    WEATHER_TOOL_ANTHROPIC,
    messages_body,
    sse_events,
)

MESSAGES = "/v1/messages"


async def test_plain_shape(client: httpx.AsyncClient) -> None:
    response = await client.post(MESSAGES, json=messages_body())
    assert response.status_code == 200
    assert response.headers["request-id"] == response.headers["x-request-id"]
    body = response.json()
    assert body["id"].startswith("msg_")
    assert body["type"] == "message"
    assert body["role"] == "assistant"
    assert body["model"] == "claude-haiku-4-5"
    assert body["stop_reason"] == "end_turn"
    assert body["stop_sequence"] is None
    (block,) = body["content"]
    assert block["type"] == "text"
    assert len(block["text"].split(" ")) == 16
    assert body["usage"] == {
        "input_tokens": body["usage"]["input_tokens"],
        "output_tokens": 16,
        "cache_read_input_tokens": 0,
        "cache_creation_input_tokens": 0,
    }


async def test_same_text_as_openai_for_same_conversation(client: httpx.AsyncClient) -> None:
    """Replies depend on the conversation only, so translation tests can compare formats."""
    anthropic = (await client.post(MESSAGES, json=messages_body("hi", max_tokens=4))).json()
    openai = {"model": "x", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}
    chat = (await client.post("/v1/chat/completions", json=openai)).json()
    assert anthropic["content"][0]["text"] == chat["choices"][0]["message"]["content"]
    assert anthropic["stop_reason"] == "max_tokens"
    assert anthropic["usage"]["input_tokens"] == chat["usage"]["prompt_tokens"]


async def test_stream_event_sequence(client: httpx.AsyncClient) -> None:
    plain = (await client.post(MESSAGES, json=messages_body(max_tokens=4))).json()
    response = await client.post(MESSAGES, json=messages_body(max_tokens=4, stream=True))
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    names = [name for name, _ in events]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * 4,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    assert all(data["type"] == name for name, data in events)
    start = events[0][1]["message"]
    assert start["content"] == [] and start["stop_reason"] is None
    assert start["usage"]["input_tokens"] == plain["usage"]["input_tokens"]
    assert events[1][1]["content_block"] == {"type": "text", "text": ""}
    deltas = [data["delta"] for _, data in events[3:7]]
    assert {d["type"] for d in deltas} == {"text_delta"}
    assert "".join(d["text"] for d in deltas) == plain["content"][0]["text"]
    message_delta = events[-2][1]
    assert message_delta["delta"] == {"stop_reason": "max_tokens", "stop_sequence": None}
    assert message_delta["usage"] == {"output_tokens": 4}


async def test_tool_use_plain_and_stream(client: httpx.AsyncClient) -> None:
    body = messages_body("What's the weather like in Oslo?", tools=[WEATHER_TOOL_ANTHROPIC])
    plain = (await client.post(MESSAGES, json=body)).json()
    assert plain["stop_reason"] == "tool_use"
    (block,) = plain["content"]
    assert block["type"] == "tool_use"
    assert block["id"].startswith("toolu_")
    assert block["name"] == "get_weather"
    assert set(block["input"]) == {"location", "unit"}

    events = sse_events((await client.post(MESSAGES, json={**body, "stream": True})).text)
    opening = events[1][1]["content_block"]
    assert opening["type"] == "tool_use" and opening["name"] == "get_weather"
    assert opening["input"] == {}
    deltas = [data["delta"] for name, data in events if name == "content_block_delta"]
    assert {d["type"] for d in deltas} == {"input_json_delta"}
    assert orjson.loads("".join(d["partial_json"] for d in deltas)) == block["input"]
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"
    assert events[-2][1]["usage"]["output_tokens"] == len(deltas)


@pytest.mark.parametrize(
    ("content", "tool_choice", "calls"),
    [
        ("hello", None, False),
        ("hello", {"type": "any"}, True),
        ("hello", {"type": "tool", "name": "get_weather"}, True),
        ("weather?", {"type": "auto"}, True),
        ("weather?", {"type": "none"}, False),
    ],
)
async def test_tool_choice(
    client: httpx.AsyncClient, content: str, tool_choice: object, calls: bool
) -> None:
    body = messages_body(content, tools=[WEATHER_TOOL_ANTHROPIC])
    if tool_choice is not None:
        body["tool_choice"] = tool_choice
    result = (await client.post(MESSAGES, json=body)).json()
    assert (result["stop_reason"] == "tool_use") is calls


async def test_tool_result_does_not_trigger_again(client: httpx.AsyncClient) -> None:
    messages = [
        {"role": "user", "content": "weather in Oslo?"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "weather: 3C"}
            ],
        },
    ]
    body = {**messages_body(tools=[WEATHER_TOOL_ANTHROPIC]), "messages": messages}
    result = (await client.post(MESSAGES, json=body)).json()
    assert result["stop_reason"] == "end_turn"
    assert result["content"] == [{"type": "text", "text": "The result is weather: 3C."}]


@pytest.mark.parametrize(
    "tools",
    [[PYTHON_TOOL_ANTHROPIC], [WEATHER_TOOL_ANTHROPIC, PYTHON_TOOL_ANTHROPIC]],
    ids=["python-only", "python-second"],
)
async def test_calculate_uses_python_plain_and_stream(
    client: httpx.AsyncClient, tools: list[Any]
) -> None:
    body = messages_body("Calculate 2 + 2", tools=tools)
    plain = (await client.post(MESSAGES, json=body)).json()
    assert plain["stop_reason"] == "tool_use"
    (block,) = plain["content"]
    assert block["type"] == "tool_use"
    assert block["name"] == "python"
    assert block["input"] == {"code": "print(2 + 2)"}

    events = sse_events((await client.post(MESSAGES, json={**body, "stream": True})).text)
    opening = events[1][1]["content_block"]
    assert opening["type"] == "tool_use" and opening["name"] == "python"
    deltas = [data["delta"] for name, data in events if name == "content_block_delta"]
    assert len(deltas) > 1
    assert {d["type"] for d in deltas} == {"input_json_delta"}
    assert "".join(d["partial_json"] for d in deltas) == CALCULATE_ARGUMENTS
    assert events[-2][1]["delta"]["stop_reason"] == "tool_use"
    assert events[-2][1]["usage"]["output_tokens"] == len(deltas)
    assert plain["usage"]["output_tokens"] == len(deltas)


async def test_calculate_without_python_uses_the_first_tool(client: httpx.AsyncClient) -> None:
    body = messages_body("Calculate 2 + 2", tools=[WEATHER_TOOL_ANTHROPIC])
    plain = (await client.post(MESSAGES, json=body)).json()
    assert plain["stop_reason"] == "tool_use"
    (block,) = plain["content"]
    assert block["name"] == "get_weather"
    assert set(block["input"]) == {"location", "unit"}
    assert block["input"]["unit"] == "celsius"


@pytest.mark.parametrize("content", ["calculate the tip", "calculate the sum of 2 and 3"])
async def test_calculate_without_arithmetic_does_not_call(
    client: httpx.AsyncClient, content: str
) -> None:
    body = messages_body(content, tools=[PYTHON_TOOL_ANTHROPIC])
    result = (await client.post(MESSAGES, json=body)).json()
    assert result["stop_reason"] == "end_turn"
    assert len(result["content"][0]["text"].split(" ")) == 16


def calculate_loop(result: object, max_tokens: int) -> dict[str, Any]:
    """An agent loop's second request: "Calculate 2 + 2", the python call, its result."""
    call = {
        "type": "tool_use",
        "id": "toolu_1",
        "name": "python",
        "input": {"code": "print(2 + 2)"},
    }
    answer = {"type": "tool_result", "tool_use_id": "toolu_1", "content": result}
    messages = [
        {"role": "user", "content": "Calculate 2 + 2"},
        {"role": "assistant", "content": [call]},
        {"role": "user", "content": [answer]},
    ]
    body = messages_body(tools=[PYTHON_TOOL_ANTHROPIC], max_tokens=max_tokens)
    return {**body, "messages": messages}


@pytest.mark.parametrize(
    ("result", "max_tokens", "text", "stop_reason"),
    [
        ("4\n", 64, "The result is 4.", "end_turn"),
        ([{"type": "text", "text": "4\n"}], 4, "The result is 4.", "end_turn"),
        ("4\n", 3, "The result is", "max_tokens"),
        (" ".join(map(str, range(20))), 10, "The result is 0 1 2 3 4 5 6", "max_tokens"),
    ],
)
async def test_tool_result_is_the_answer(
    client: httpx.AsyncClient, result: object, max_tokens: int, text: str, stop_reason: str
) -> None:
    body = calculate_loop(result, max_tokens)
    plain = (await client.post(MESSAGES, json=body)).json()
    assert plain["content"] == [{"type": "text", "text": text}]
    assert plain["stop_reason"] == stop_reason
    assert plain["usage"]["output_tokens"] == len(text.split(" "))

    events = sse_events((await client.post(MESSAGES, json={**body, "stream": True})).text)
    deltas = [data["delta"] for name, data in events if name == "content_block_delta"]
    assert {d["type"] for d in deltas} == {"text_delta"}
    assert "".join(d["text"] for d in deltas) == text
    message_delta = events[-2][1]
    assert message_delta["delta"] == {"stop_reason": stop_reason, "stop_sequence": None}
    assert message_delta["usage"] == {"output_tokens": len(deltas)}
    assert events[0][1]["message"]["usage"]["input_tokens"] == plain["usage"]["input_tokens"]


def assert_anthropic_error(response: httpx.Response, status: int, kind: str) -> str:
    assert response.status_code == status
    body = response.json()
    assert body["type"] == "error"
    assert set(body["error"]) == {"type", "message"}
    assert body["error"]["type"] == kind
    return str(body["error"]["message"])


async def test_max_tokens_is_required(client: httpx.AsyncClient) -> None:
    body = messages_body()
    del body["max_tokens"]
    message = assert_anthropic_error(
        await client.post(MESSAGES, json=body), 400, "invalid_request_error"
    )
    assert "max_tokens" in message


@pytest.mark.parametrize(
    "body",
    [
        {"max_tokens": 5, "messages": [{"role": "user", "content": "x"}]},
        {"model": "m", "max_tokens": 5, "messages": []},
        {"model": "m", "max_tokens": -1, "messages": [{"role": "user", "content": "x"}]},
        {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}], "tools": 1},
    ],
)
async def test_bad_requests(client: httpx.AsyncClient, body: object) -> None:
    assert_anthropic_error(await client.post(MESSAGES, json=body), 400, "invalid_request_error")


async def test_wrong_method_speaks_anthropic(client: httpx.AsyncClient) -> None:
    assert_anthropic_error(await client.get(MESSAGES), 405, "invalid_request_error")


async def test_system_prompt_counts_toward_input_tokens(client: httpx.AsyncClient) -> None:
    bare = (await client.post(MESSAGES, json=messages_body())).json()
    system = [{"type": "text", "text": "You are terse. " * 20}]
    with_system = (await client.post(MESSAGES, json=messages_body(system=system))).json()
    assert with_system["usage"]["input_tokens"] > bare["usage"]["input_tokens"]
    assert with_system["content"] == bare["content"]
