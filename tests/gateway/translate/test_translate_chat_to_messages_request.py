"""OpenAI chat request -> Anthropic Messages request."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tollhouse.gateway.translate import TranslationError, chat_request_to_messages

PNG = "iVBORw0KGgo="
WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "weather",
        "description": "Current weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def translate(body: dict[str, Any], default_max_tokens: int = 1024) -> dict[str, Any]:
    return chat_request_to_messages(body, model="claude-x", default_max_tokens=default_max_tokens)


CASES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    (
        "plain user message, default max_tokens",
        {"model": "alias", "messages": [{"role": "user", "content": "Hi"}]},
        {"model": "claude-x", "max_tokens": 1024, "messages": [{"role": "user", "content": "Hi"}]},
    ),
    (
        "system and developer collected, wherever they are",
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
                {"role": "developer", "content": [{"type": "text", "text": "Use French."}]},
            ]
        },
        {
            "model": "claude-x",
            "max_tokens": 1024,
            "system": [
                {"type": "text", "text": "Be brief."},
                {"type": "text", "text": "Use French."},
            ],
            "messages": [{"role": "user", "content": "Hi"}],
        },
    ),
    (
        "single system prompt stays a string",
        {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]},
        {
            "model": "claude-x",
            "max_tokens": 1024,
            "system": "S",
            "messages": [{"role": "user", "content": "U"}],
        },
    ),
    (
        "consecutive same-role messages merged",
        {
            "messages": [
                {"role": "user", "content": "one"},
                {"role": "user", "content": [{"type": "text", "text": "two"}]},
                {"role": "assistant", "content": "three"},
                {"role": "assistant", "content": ""},
                {"role": "assistant", "content": "four"},
            ]
        },
        {
            "model": "claude-x",
            "max_tokens": 1024,
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "text", "text": "one"}, {"type": "text", "text": "two"}],
                },
                {
                    "role": "assistant",
                    "content": [
                        {"type": "text", "text": "three"},
                        {"type": "text", "text": "four"},
                    ],
                },
            ],
        },
    ),
    (
        "tool calls, tool results merged before the next user text",
        {
            "messages": [
                {"role": "user", "content": "Weather in Paris and Rome?"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_1",
                            "type": "function",
                            "function": {"name": "weather", "arguments": '{"city": "Paris"}'},
                        },
                        {
                            "id": "call.2",
                            "type": "function",
                            "function": {"name": "weather", "arguments": '{"city": "Rome"}'},
                        },
                    ],
                },
                {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
                {
                    "role": "tool",
                    "tool_call_id": "call.2",
                    "content": [{"type": "text", "text": "rain"}],
                },
                {"role": "user", "content": "Thanks"},
            ],
            "tools": [WEATHER_TOOL],
        },
        {
            "model": "claude-x",
            "max_tokens": 1024,
            "messages": [
                {"role": "user", "content": "Weather in Paris and Rome?"},
                {
                    "role": "assistant",
                    "content": [
                        {
                            "type": "tool_use",
                            "id": "call_1",
                            "name": "weather",
                            "input": {"city": "Paris"},
                        },
                        {
                            "type": "tool_use",
                            "id": "call_2",
                            "name": "weather",
                            "input": {"city": "Rome"},
                        },
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "call_1", "content": "sunny"},
                        {"type": "tool_result", "tool_use_id": "call_2", "content": "rain"},
                        {"type": "text", "text": "Thanks"},
                    ],
                },
            ],
            "tools": [
                {
                    "name": "weather",
                    "input_schema": {
                        "type": "object",
                        "properties": {"city": {"type": "string"}},
                    },
                    "description": "Current weather",
                }
            ],
        },
    ),
    (
        "assistant text with a parameterless tool call",
        {
            "messages": [
                {"role": "user", "content": "time?"},
                {
                    "role": "assistant",
                    "content": "Checking.",
                    "tool_calls": [
                        {
                            "id": "c",
                            "type": "function",
                            "function": {"name": "now", "arguments": ""},
                        }
                    ],
                },
                {"role": "tool", "tool_call_id": "c", "content": ""},
            ],
            "tools": [{"type": "function", "function": {"name": "now"}}],
        },
        {
            "model": "claude-x",
            "max_tokens": 1024,
            "messages": [
                {"role": "user", "content": "time?"},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "text", "text": "Checking."},
                        {"type": "tool_use", "id": "c", "name": "now", "input": {}},
                    ],
                },
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "c"}]},
            ],
            "tools": [{"name": "now", "input_schema": {"type": "object"}}],
        },
    ),
    (
        "images from data: and https URLs, and a PDF file",
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Compare"},
                        {
                            "type": "image_url",
                            "image_url": {"url": f"data:image/png;base64,{PNG}", "detail": "low"},
                        },
                        {"type": "image_url", "image_url": {"url": "https://x.test/a.jpg"}},
                        {
                            "type": "file",
                            "file": {"file_data": "data:application/pdf;base64,JVBERi0="},
                        },
                    ],
                }
            ]
        },
        {
            "model": "claude-x",
            "max_tokens": 1024,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Compare"},
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                        },
                        {"type": "image", "source": {"type": "url", "url": "https://x.test/a.jpg"}},
                        {
                            "type": "document",
                            "source": {
                                "type": "base64",
                                "media_type": "application/pdf",
                                "data": "JVBERi0=",
                            },
                        },
                    ],
                }
            ],
        },
    ),
    (
        "sampling parameters, stop string, user, stream",
        {
            "messages": [{"role": "user", "content": "x"}],
            "max_tokens": 50,
            "temperature": 0.7,
            "top_p": 0.9,
            "stop": "END",
            "user": "u-42",
            "stream": True,
            "stream_options": {"include_usage": True},
            "seed": 7,
            "presence_penalty": 0.5,
        },
        {
            "model": "claude-x",
            "max_tokens": 50,
            "messages": [{"role": "user", "content": "x"}],
            "temperature": 0.7,
            "top_p": 0.9,
            "stop_sequences": ["END"],
            "metadata": {"user_id": "u-42"},
            "stream": True,
        },
    ),
    (
        "max_completion_tokens wins over max_tokens; stop list; temperature 1 allowed",
        {
            "messages": [{"role": "user", "content": "x"}],
            "max_tokens": 50,
            "max_completion_tokens": 60,
            "stop": ["a", "b"],
            "temperature": 1,
            "n": 1,
        },
        {
            "model": "claude-x",
            "max_tokens": 60,
            "messages": [{"role": "user", "content": "x"}],
            "temperature": 1,
            "stop_sequences": ["a", "b"],
        },
    ),
    (
        "json_schema response_format becomes output_config.format",
        {
            "messages": [{"role": "user", "content": "x"}],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "r", "schema": {"type": "object"}},
            },
        },
        {
            "model": "claude-x",
            "max_tokens": 1024,
            "messages": [{"role": "user", "content": "x"}],
            "output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}},
        },
    ),
    (
        "tool_choice without tools is dropped; whitespace-only text dropped",
        {
            "messages": [
                {"role": "user", "content": "x"},
                {"role": "assistant", "content": "  "},
            ],
            "tool_choice": "required",
        },
        {"model": "claude-x", "max_tokens": 1024, "messages": [{"role": "user", "content": "x"}]},
    ),
]


@pytest.mark.parametrize(("body", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_translates(body: Any, expected: Any, sdk: Any) -> None:
    out = translate(body)
    assert out == expected
    sdk.anthropic_request(out)


@pytest.mark.parametrize(
    ("tool_choice", "parallel", "expected"),
    [
        ("auto", None, {"type": "auto"}),
        ("required", None, {"type": "any"}),
        ("none", None, {"type": "none"}),
        (
            {"type": "function", "function": {"name": "weather"}},
            None,
            {"type": "tool", "name": "weather"},
        ),
        (None, None, None),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("required", False, {"type": "any", "disable_parallel_tool_use": True}),
        ("none", False, {"type": "none"}),
        ("auto", True, {"type": "auto"}),
    ],
)
def test_tool_choice(tool_choice: Any, parallel: Any, expected: Any, sdk: Any) -> None:
    body: dict[str, Any] = {"messages": [{"role": "user", "content": "x"}], "tools": [WEATHER_TOOL]}
    if tool_choice is not None:
        body["tool_choice"] = tool_choice
    if parallel is not None:
        body["parallel_tool_calls"] = parallel
    out = translate(body)
    assert out.get("tool_choice") == expected
    sdk.anthropic_request(out)


def test_strict_tool_passes_through(sdk: Any) -> None:
    tool = {"type": "function", "function": {**WEATHER_TOOL["function"], "strict": True}}
    out = translate({"messages": [{"role": "user", "content": "x"}], "tools": [tool]})
    assert out["tools"][0]["strict"] is True
    sdk.anthropic_request(out)


def _user(*parts: dict[str, Any]) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": list(parts)}]}


def _call(arguments: str) -> dict[str, Any]:
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": arguments}}
    return {
        "messages": [
            {"role": "user", "content": "x"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
        ]
    }


ERRORS: list[tuple[str, dict[str, Any], str]] = [
    (
        "audio input",
        _user(
            {"type": "text", "text": "listen"},
            {"type": "input_audio", "input_audio": {"data": "AA", "format": "wav"}},
        ),
        "messages[0].content[1].type 'input_audio' is not supported by Anthropic",
    ),
    (
        "invalid JSON arguments",
        _call("{not json"),
        "messages[1].tool_calls[0].function.arguments is not valid JSON",
    ),
    (
        "arguments not an object",
        _call("[1, 2]"),
        "messages[1].tool_calls[0].function.arguments must encode a JSON object",
    ),
    (
        "temperature above 1",
        {"messages": [{"role": "user", "content": "x"}], "temperature": 1.5},
        "temperature 1.5 exceeds Anthropic's maximum of 1",
    ),
    (
        "temperature not a number",
        {"messages": [{"role": "user", "content": "x"}], "temperature": "hot"},
        "temperature must be a number",
    ),
    ("n > 1", {"messages": [{"role": "user", "content": "x"}], "n": 3}, "n 3 is not supported"),
    ("no messages", {"messages": []}, "messages must not be empty"),
    ("messages missing", {}, "messages must be an array"),
    ("message not an object", {"messages": ["hi"]}, "messages[0] must be an object"),
    (
        "legacy function role",
        {"messages": [{"role": "function", "name": "f", "content": "x"}]},
        "messages[0].role 'function' is not supported by Anthropic",
    ),
    (
        "legacy function_call",
        {
            "messages": [
                {"role": "assistant", "function_call": {"name": "f", "arguments": "{}"}},
            ]
        },
        "messages[0].function_call is not supported; use tool_calls",
    ),
    (
        "unsupported image type",
        _user({"type": "image_url", "image_url": {"url": "data:image/bmp;base64,AA"}}),
        "messages[0].content[0] media type 'image/bmp' is not supported by Anthropic",
    ),
    (
        "non-http image URL",
        _user({"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}),
        "messages[0].content[0] must be a base64 data: URL or an http(s) URL",
    ),
    (
        "file by id",
        _user({"type": "file", "file": {"file_id": "file-1"}}),
        "messages[0].content[0].file needs file_data",
    ),
    (
        "non-PDF file",
        _user({"type": "file", "file": {"file_data": "data:text/csv;base64,AA"}}),
        "messages[0].content[0] must be a base64 data:application/pdf URL",
    ),
    (
        "image in a system message",
        {
            "messages": [
                {"role": "system", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}
            ]
        },
        "messages[0].content[0].type 'image_url' is not supported here; only text is",
    ),
    (
        "custom tool",
        {
            "messages": [{"role": "user", "content": "x"}],
            "tools": [{"type": "custom", "custom": {"name": "g"}}],
        },
        "tools[0].type 'custom' is not supported by Anthropic",
    ),
    (
        "allowed_tools tool_choice",
        {
            "messages": [{"role": "user", "content": "x"}],
            "tools": [WEATHER_TOOL],
            "tool_choice": {"type": "allowed_tools", "allowed_tools": {"mode": "auto"}},
        },
        "tool_choice 'allowed_tools' is not supported by Anthropic",
    ),
    (
        "max_tokens zero",
        {"messages": [{"role": "user", "content": "x"}], "max_tokens": 0},
        "max_tokens must be a positive integer",
    ),
    (
        "tool message without id",
        {"messages": [{"role": "tool", "content": "x"}]},
        "messages[0].tool_call_id must be a string",
    ),
]


@pytest.mark.parametrize(("body", "message"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_rejects(body: Any, message: Any) -> None:
    with pytest.raises(TranslationError, match="^" + re.escape(message)):
        translate(body)


def test_translation_error_is_a_value_error() -> None:
    assert issubclass(TranslationError, ValueError)


def test_does_not_mutate_input() -> None:
    body = {
        "messages": [{"role": "user", "content": "x"}],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
    }
    snapshot = repr(body)
    translate(body)
    assert repr(body) == snapshot
