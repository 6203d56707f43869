"""Request builders and SSE parsers shared by the dev upstream tests."""

from __future__ import annotations

from typing import Any

import orjson


def chat_body(content: str = "Hello there", **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}], **extra}


def messages_body(content: str = "Hello there", **extra: Any) -> dict[str, Any]:
    body = {"model": "claude-haiku-4-5", "max_tokens": 64}
    return {**body, "messages": [{"role": "user", "content": content}], **extra}


def sse_data(text: str) -> list[Any]:
    """The ``data:`` payloads of an SSE body, JSON-decoded except ``[DONE]``."""
    payloads: list[Any] = []
    for line in text.split("\n"):
        if line.startswith("data: "):
            data = line[len("data: ") :]
            payloads.append(data if data == "[DONE]" else orjson.loads(data))
    return payloads


def sse_events(text: str) -> list[tuple[str, Any]]:
    """(event name, decoded data) pairs of an Anthropic-style SSE body."""
    events = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        events.append((lines["event"], orjson.loads(lines["data"])))
    return events


WEATHER_TOOL_OPENAI: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "location": {"type": "string"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["location", "unit"],
        },
    },
}
WEATHER_TOOL_ANTHROPIC: Any = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "input_schema": WEATHER_TOOL_OPENAI["function"]["parameters"],
}
PYTHON_TOOL_OPENAI: Any = {
    "type": "function",
    "function": {
        "name": "python",
        "description": "Run Python 3 code; answer what it prints",
        "parameters": {
            "type": "object",
            "properties": {"code": {"type": "string"}},
            "required": ["code"],
        },
    },
}
PYTHON_TOOL_ANTHROPIC: Any = {
    "name": "python",
    "description": "Run Python 3 code; answer what it prints",
    "input_schema": PYTHON_TOOL_OPENAI["function"]["parameters"],
}
# What "Calculate 2 + 2" makes the dev upstream send to the python tool.
CALCULATE_ARGUMENTS = '{"code":"print(2 + 2)"}'
