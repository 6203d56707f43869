"""Anthropic Messages request -> OpenAI chat request."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tollhouse.gateway.translate import (
    TranslationError,
    chat_request_to_messages,
    messages_request_to_chat,
)

PNG = "iVBORw0KGgo="
WEATHER = {
    "name": "weather",
    "description": "Current weather",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def translate(body: dict[str, Any]) -> dict[str, Any]:
    return messages_request_to_chat(body, model="gpt-x")


def _base(**extra: Any) -> dict[str, Any]:
    return {"model": "alias", "max_tokens": 100, **extra}


CASES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    (
        "plain text",
        _base(messages=[{"role": "user", "content": "Hi"}]),
        {
            "model": "gpt-x",
            "messages": [{"role": "user", "content": "Hi"}],
            "max_completion_tokens": 100,
        },
    ),
    (
        "system as blocks, joined; cache_control dropped",
        _base(
            system=[
                {"type": "text", "text": "A", "cache_control": {"type": "ephemeral"}},
                {"type": "text", "text": "B"},
            ],
            messages=[{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
        ),
        {
            "model": "gpt-x",
            "messages": [
                {"role": "system", "content": "A\n\nB"},
                {"role": "user", "content": "Hi"},
            ],
            "max_completion_tokens": 100,
        },
    ),
    (
        "tool use and results, with text after the results",
        _base(
            messages=[
                {"role": "user", "content": "Paris?"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "thinking", "thinking": "hmm", "signature": "sig"},
                        {"type": "text", "text": "Let me check."},
                        {
                            "type": "tool_use",
                            "id": "toolu_1",
                            "name": "weather",
                            "input": {"city": "Paris"},
                        },
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                        {"type": "text", "text": "And Rome?"},
                    ],
                },
            ],
            tools=[WEATHER],
            tool_choice={"type": "auto", "disable_parallel_tool_use": True},
        ),
        {
            "model": "gpt-x",
            "messages": [
                {"role": "user", "content": "Paris?"},
                {
                    "role": "assistant",
                    "content": "Let me check.",
                    "tool_calls": [
                        {
                            "id": "toolu_1",
                            "type": "function",
                            "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "toolu_1", "content": "sunny"},
                {"role": "user", "content": "And Rome?"},
            ],
            "max_completion_tokens": 100,
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "weather",
                        "description": "Current weather",
                        "parameters": WEATHER["input_schema"],
                    },
                }
            ],
            "tool_choice": "auto",
            "parallel_tool_calls": False,
        },
    ),
    (
        "tool result blocks, error flag and image moved to a user message",
        _base(
            messages=[
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "t", "name": "shot", "input": {}}],
                },
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "tool_result",
                            "tool_use_id": "t",
                            "is_error": True,
                            "content": [
                                {"type": "text", "text": "line 1"},
                                {
                                    "type": "image",
                                    "source": {
                                        "type": "base64",
                                        "media_type": "image/png",
                                        "data": PNG,
                                    },
                                },
                                {"type": "text", "text": "line 2"},
                            ],
                        }
                    ],
                },
            ]
        ),
        {
            "model": "gpt-x",
            "messages": [
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "t",
                            "type": "function",
                            "function": {"name": "shot", "arguments": "{}"},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "t", "content": "line 1\nline 2"},
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}
                    ],
                },
            ],
            "max_completion_tokens": 100,
        },
    ),
    (
        "images, url images and PDFs as parts",
        _base(
            messages=[
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "image",
                            "source": {"type": "url", "url": "https://x.test/a.png"},
                        },
                        {
                            "type": "document",
                            "title": "spec.pdf",
                            "source": {
                                "type": "base64",
                                "media_type": "application/pdf",
                                "data": "JVBERi0=",
                            },
                        },
                        {"type": "text", "text": "Summarise"},
                    ],
                }
            ]
        ),
        {
            "model": "gpt-x",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}},
                        {
                            "type": "file",
                            "file": {
                                "file_data": "data:application/pdf;base64,JVBERi0=",
                                "filename": "spec.pdf",
                            },
                        },
                        {"type": "text", "text": "Summarise"},
                    ],
                }
            ],
            "max_completion_tokens": 100,
        },
    ),
    (
        "sampling, stop sequences, metadata, structured output, streaming",
        _base(
            messages=[{"role": "user", "content": "x"}],
            temperature=0.2,
            top_p=0.5,
            top_k=40,
            stop_sequences=["END"],
            metadata={"user_id": "u-1"},
            thinking={"type": "enabled", "budget_tokens": 2000},
            output_config={"format": {"type": "json_schema", "schema": {"type": "object"}}},
            stream=True,
        ),
        {
            "model": "gpt-x",
            "messages": [{"role": "user", "content": "x"}],
            "max_completion_tokens": 100,
            "temperature": 0.2,
            "top_p": 0.5,
            "stop": ["END"],
            "user": "u-1",
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": {"type": "object"}},
            },
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    ),
    (
        "empty assistant turn keeps an empty string",
        _base(
            messages=[
                {"role": "user", "content": "x"},
                {"role": "assistant", "content": [{"type": "redacted_thinking", "data": "z"}]},
            ]
        ),
        {
            "model": "gpt-x",
            "messages": [
                {"role": "user", "content": "x"},
                {"role": "assistant", "content": ""},
            ],
            "max_completion_tokens": 100,
        },
    ),
]


@pytest.mark.parametrize(("body", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_translates(body: Any, expected: Any, sdk: Any) -> None:
    sdk.anthropic_request(body)
    out = translate(body)
    assert out == expected
    sdk.openai_request(out)


@pytest.mark.parametrize(
    ("tool_choice", "expected"),
    [
        ({"type": "auto"}, "auto"),
        ({"type": "any"}, "required"),
        ({"type": "none"}, "none"),
        (
            {"type": "tool", "name": "weather"},
            {"type": "function", "function": {"name": "weather"}},
        ),
    ],
)
def test_tool_choice(tool_choice: Any, expected: Any, sdk: Any) -> None:
    body = _base(
        messages=[{"role": "user", "content": "x"}], tools=[WEATHER], tool_choice=tool_choice
    )
    out = translate(body)
    assert out["tool_choice"] == expected
    assert "parallel_tool_calls" not in out
    sdk.openai_request(out)


def test_tool_conversation_round_trips_through_anthropic(sdk: Any) -> None:
    """chat -> messages -> chat keeps a tool conversation intact."""
    original = {
        "model": "gpt-x",
        "messages": [
            {"role": "system", "content": "Be terse."},
            {"role": "user", "content": "Weather?"},
            {
                "role": "assistant",
                "content": "Checking.",
                "tool_calls": [
                    {
                        "id": "call_9",
                        "type": "function",
                        "function": {"name": "weather", "arguments": '{"city": "Oslo"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_9", "content": "snow"},
            {"role": "assistant", "content": "Snow."},
        ],
        "max_completion_tokens": 100,
        "tools": [
            {
                "type": "function",
                "function": {
                    "name": "weather",
                    "description": "Current weather",
                    "parameters": WEATHER["input_schema"],
                },
            }
        ],
        "tool_choice": "required",
        "stop": ["x"],
    }
    anthropic = chat_request_to_messages(original, model="claude-x", default_max_tokens=1)
    sdk.anthropic_request(anthropic)
    back = messages_request_to_chat(anthropic, model="gpt-x")
    assert back == original


ERRORS: list[tuple[str, dict[str, Any], str]] = [
    (
        "server tool",
        _base(
            messages=[{"role": "user", "content": "x"}],
            tools=[{"type": "web_search_20250305", "name": "web_search"}],
        ),
        "tools[0].type 'web_search_20250305' is not supported by OpenAI-compatible providers",
    ),
    (
        "server tool use block",
        _base(
            messages=[
                {
                    "role": "assistant",
                    "content": [
                        {"type": "server_tool_use", "id": "s", "name": "web_search", "input": {}}
                    ],
                }
            ]
        ),
        "messages[0].content[0].type 'server_tool_use' is not supported",
    ),
    (
        "file image source",
        _base(
            messages=[
                {
                    "role": "user",
                    "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}],
                }
            ]
        ),
        "messages[0].content[0].source.type 'file' is not supported",
    ),
    (
        "text document",
        _base(
            messages=[
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "document",
                            "source": {"type": "text", "media_type": "text/plain", "data": "x"},
                        }
                    ],
                }
            ]
        ),
        "messages[0].content[0].source must be a base64 PDF",
    ),
    (
        "system role inside messages",
        _base(messages=[{"role": "system", "content": "x"}]),
        "messages[0].role 'system' is not supported",
    ),
    ("no messages", _base(messages=[]), "messages must not be empty"),
    (
        "content not a list",
        _base(messages=[{"role": "user", "content": 5}]),
        "messages[0].content must be an array",
    ),
    (
        "bad max_tokens",
        {"messages": [{"role": "user", "content": "x"}], "max_tokens": "many"},
        "max_tokens must be a positive integer",
    ),
    (
        "unknown tool_choice",
        _base(
            messages=[{"role": "user", "content": "x"}], tools=[WEATHER], tool_choice={"type": "x"}
        ),
        "tool_choice.type 'x' is not supported",
    ),
    (
        "tool_use input not an object",
        _base(
            messages=[
                {
                    "role": "assistant",
                    "content": [{"type": "tool_use", "id": "t", "name": "f", "input": [1]}],
                }
            ]
        ),
        "messages[0].content[0].input must be an object",
    ),
]


@pytest.mark.parametrize(("body", "message"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_rejects(body: Any, message: Any) -> None:
    with pytest.raises(TranslationError, match="^" + re.escape(message)):
        translate(body)
