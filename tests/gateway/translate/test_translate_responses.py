"""Whole responses in both directions, and usage normalisation."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tollhouse.gateway.translate import (
    TranslationError,
    Usage,
    chat_response_to_messages,
    messages_response_to_chat,
    usage_from_chat,
    usage_from_messages,
)


def anthropic_message(content: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    message = {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": content,
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 5},
    }
    return {**message, **extra}


def chat_completion(message: dict[str, Any], **extra: Any) -> dict[str, Any]:
    completion = {
        "id": "chatcmpl-abc",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "gpt-x",
        "choices": [
            {"index": 0, "message": {"role": "assistant", **message}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }
    return {**completion, **extra}


def test_anthropic_text_response_to_chat(sdk: Any) -> None:
    resp = anthropic_message(
        [
            {"type": "thinking", "thinking": "...", "signature": "s"},
            {"type": "text", "text": "Hello "},
            {"type": "text", "text": "there"},
        ],
        usage={
            "input_tokens": 10,
            "output_tokens": 5,
            "cache_read_input_tokens": 100,
            "cache_creation_input_tokens": 20,
        },
    )
    sdk.message(resp)
    out = messages_response_to_chat(resp, model="alias", created=123)
    assert out == {
        "id": "chatcmpl-msg_01",
        "object": "chat.completion",
        "created": 123,
        "model": "alias",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello there", "refusal": None},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": 130,
            "completion_tokens": 5,
            "total_tokens": 135,
            "prompt_tokens_details": {"cached_tokens": 100, "cache_write_tokens": 20},
        },
    }
    completion = sdk.completion(out)
    assert completion.choices[0].message.content == "Hello there"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens_details is not None
    assert completion.usage.prompt_tokens_details.cached_tokens == 100


def test_anthropic_tool_use_response_to_chat(sdk: Any) -> None:
    resp = anthropic_message(
        [
            {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "toolu_2", "name": "now", "input": {}},
        ],
        stop_reason="tool_use",
    )
    sdk.message(resp)
    out = messages_response_to_chat(resp, model="alias")
    message = out["choices"][0]["message"]
    assert message["content"] is None
    assert out["choices"][0]["finish_reason"] == "tool_calls"
    assert message["tool_calls"] == [
        {
            "id": "toolu_1",
            "type": "function",
            "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
        },
        {"id": "toolu_2", "type": "function", "function": {"name": "now", "arguments": "{}"}},
    ]
    completion = sdk.completion(out)
    assert isinstance(completion.created, int)
    calls = completion.choices[0].message.tool_calls
    assert calls is not None
    assert [json.loads(c.function.arguments) for c in calls] == [{"city": "Paris"}, {}]


STOP_TO_FINISH = [
    ("end_turn", "stop"),
    ("stop_sequence", "stop"),
    ("pause_turn", "stop"),
    ("max_tokens", "length"),
    ("model_context_window_exceeded", "length"),
    ("tool_use", "tool_calls"),
    ("refusal", "content_filter"),
    (None, "stop"),
]


@pytest.mark.parametrize(("stop_reason", "finish_reason"), STOP_TO_FINISH)
def test_stop_reason_to_finish_reason(stop_reason: Any, finish_reason: Any, sdk: Any) -> None:
    resp = anthropic_message([{"type": "text", "text": "x"}], stop_reason=stop_reason)
    out = messages_response_to_chat(resp, model="m")
    assert out["choices"][0]["finish_reason"] == finish_reason
    sdk.completion(out)


def test_chat_text_response_to_anthropic(sdk: Any) -> None:
    resp = chat_completion(
        {"content": "Hi!", "refusal": None},
        usage={
            "prompt_tokens": 130,
            "completion_tokens": 5,
            "total_tokens": 135,
            "prompt_tokens_details": {"cached_tokens": 100},
        },
    )
    sdk.completion(resp)
    out = chat_response_to_messages(resp, model="alias")
    assert out == {
        "id": "msg_abc",
        "type": "message",
        "role": "assistant",
        "model": "alias",
        "content": [{"type": "text", "text": "Hi!"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": 30,
            "output_tokens": 5,
            "cache_read_input_tokens": 100,
            "cache_creation_input_tokens": 0,
        },
    }
    sdk.message(out)


def test_chat_tool_calls_response_to_anthropic(sdk: Any) -> None:
    calls = [
        {
            "id": "call_1",
            "type": "function",
            "function": {"name": "weather", "arguments": '{"city":"Paris"}'},
        }
    ]
    resp = chat_completion({"content": "Checking", "tool_calls": calls})
    resp["choices"][0]["finish_reason"] = "tool_calls"
    sdk.completion(resp)
    out = chat_response_to_messages(resp, model="alias")
    assert out["content"] == [
        {"type": "text", "text": "Checking"},
        {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Paris"}},
    ]
    assert out["stop_reason"] == "tool_use"
    message = sdk.message(out)
    assert message.content[1].type == "tool_use"


@pytest.mark.parametrize(
    ("finish_reason", "stop_reason"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("function_call", "tool_use"),
        ("content_filter", "refusal"),
        (None, "end_turn"),
    ],
)
def test_finish_reason_to_stop_reason(finish_reason: Any, stop_reason: Any, sdk: Any) -> None:
    resp = chat_completion({"content": "x"})
    resp["choices"][0]["finish_reason"] = finish_reason
    out = chat_response_to_messages(resp, model="m")
    assert out["stop_reason"] == stop_reason
    sdk.message(out)


def test_tool_calls_ending_in_stop_become_tool_use(sdk: Any) -> None:
    call = {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    out = chat_response_to_messages(
        chat_completion({"content": None, "tool_calls": [call]}), model="m"
    )
    assert out["stop_reason"] == "tool_use"
    assert out["content"] == [{"type": "tool_use", "id": "c", "name": "f", "input": {}}]
    sdk.message(out)


def test_refusal_becomes_text_with_refusal_stop(sdk: Any) -> None:
    out = chat_response_to_messages(chat_completion({"content": None, "refusal": "No."}), model="m")
    assert out["content"] == [{"type": "text", "text": "No."}]
    assert out["stop_reason"] == "refusal"
    sdk.message(out)


def test_missing_usage_reports_zero(sdk: Any) -> None:
    resp = chat_completion({"content": ""})
    del resp["usage"]
    out = chat_response_to_messages(resp, model="m")
    assert out["content"] == []
    assert out["usage"]["input_tokens"] == 0
    sdk.message(out)


@pytest.mark.parametrize(
    ("resp", "message"),
    [
        (
            chat_completion(
                {
                    "content": None,
                    "tool_calls": [
                        {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{"}}
                    ],
                }
            ),
            "choices[0].message.tool_calls[0].function.arguments is not valid JSON",
        ),
        ({**chat_completion({"content": "x"}), "choices": []}, "choices must not be empty"),
        ({"id": "x"}, "choices must be an array"),
    ],
)
def test_chat_response_errors(resp: Any, message: Any) -> None:
    with pytest.raises(TranslationError, match=message.replace("[", r"\[").replace("]", r"\]")):
        chat_response_to_messages(resp, model="m")


def test_anthropic_response_without_content_is_an_error() -> None:
    with pytest.raises(TranslationError, match="content must be an array"):
        messages_response_to_chat({"id": "msg_1"}, model="m")


# -- usage -----------------------------------------------------------------------------------

USAGE_FROM_MESSAGES = [
    (None, None),
    ({"input_tokens": 10, "output_tokens": 3}, Usage(10, 3, 0, 0)),
    (
        {
            "input_tokens": 10,
            "output_tokens": 3,
            "cache_read_input_tokens": 50,
            "cache_creation_input_tokens": 7,
        },
        Usage(prompt_tokens=67, completion_tokens=3, cached_tokens=50, cache_creation_tokens=7),
    ),
    (
        {"input_tokens": 4, "output_tokens": 1, "cache_read_input_tokens": None},
        Usage(4, 1, 0, 0),
    ),
    ({"output_tokens": 9}, Usage(0, 9, 0, 0)),
]


@pytest.mark.parametrize(("raw", "expected"), USAGE_FROM_MESSAGES)
def test_usage_from_messages(raw: Any, expected: Any) -> None:
    assert usage_from_messages(raw) == expected


USAGE_FROM_CHAT = [
    (None, None),
    ({"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}, Usage(10, 3)),
    (
        {
            "prompt_tokens": 100,
            "completion_tokens": 3,
            "total_tokens": 103,
            "prompt_tokens_details": {"cached_tokens": 80, "cache_write_tokens": 5},
        },
        Usage(prompt_tokens=100, completion_tokens=3, cached_tokens=80, cache_creation_tokens=5),
    ),
    (
        {"prompt_tokens": 10, "completion_tokens": 3, "prompt_tokens_details": None},
        Usage(10, 3),
    ),
]


@pytest.mark.parametrize(("raw", "expected"), USAGE_FROM_CHAT)
def test_usage_from_chat(raw: Any, expected: Any) -> None:
    assert usage_from_chat(raw) == expected


def test_usage_total_and_immutability() -> None:
    usage = Usage(prompt_tokens=5, completion_tokens=2)
    assert usage.total_tokens == 7
    with pytest.raises(AttributeError):
        usage.prompt_tokens = 1  # type: ignore[misc]


def test_usage_survives_a_round_trip_through_both_formats() -> None:
    anthropic = {
        "input_tokens": 10,
        "output_tokens": 3,
        "cache_read_input_tokens": 50,
        "cache_creation_input_tokens": 7,
    }
    chat = messages_response_to_chat(
        anthropic_message([{"type": "text", "text": "x"}], usage=anthropic), model="m"
    )
    assert usage_from_chat(chat["usage"]) == Usage(67, 3, 50, 7)
    back = chat_response_to_messages(chat, model="m")
    assert back["usage"] == anthropic
    assert usage_from_messages(back["usage"]) == Usage(67, 3, 50, 7)
