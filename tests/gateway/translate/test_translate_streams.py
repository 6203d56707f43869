"""Streams in both directions, replayed through the official SDK accumulators."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tollhouse.gateway.translate import ChatStreamToMessages, MessagesStreamToChat, Usage

Event = tuple[str, dict[str, Any]]


# -- Anthropic events -> OpenAI chunks --------------------------------------------------------


def _ev(name: str, **data: Any) -> Event:
    return (name, {"type": name, **data})


def _text_delta(index: int, text: str) -> Event:
    return _ev("content_block_delta", index=index, delta={"type": "text_delta", "text": text})


def _json_delta(index: int, fragment: str) -> Event:
    delta = {"type": "input_json_delta", "partial_json": fragment}
    return _ev("content_block_delta", index=index, delta=delta)


def _tool_start(index: int, call_id: str, name: str) -> Event:
    block = {"type": "tool_use", "id": call_id, "name": name, "input": {}}
    return _ev("content_block_start", index=index, content_block=block)


def anthropic_stream(stop_reason: str = "tool_use") -> list[Event]:
    start_usage = {
        "input_tokens": 25,
        "output_tokens": 1,
        "cache_read_input_tokens": 100,
        "cache_creation_input_tokens": 0,
    }
    message: dict[str, Any] = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-x",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": start_usage,
    }
    return [
        _ev("message_start", message=message),
        _ev("ping"),
        _ev("content_block_start", index=0, content_block={"type": "text", "text": ""}),
        _text_delta(0, "Let me "),
        _text_delta(0, "check."),
        _ev("content_block_stop", index=0),
        _tool_start(1, "toolu_1", "weather"),
        _json_delta(1, ""),
        _json_delta(1, '{"city": '),
        _json_delta(1, '"Paris"}'),
        _ev("content_block_stop", index=1),
        _tool_start(2, "toolu_2", "now"),
        _ev("content_block_stop", index=2),
        _ev(
            "message_delta",
            delta={"stop_reason": stop_reason, "stop_sequence": None},
            usage={"output_tokens": 42},
        ),
        _ev("message_stop"),
    ]


def run_to_chat(events: list[Event], *, include_usage: bool) -> list[dict[str, Any]]:
    translator = MessagesStreamToChat(model="alias", include_usage=include_usage, created=111)
    chunks = [chunk for name, data in events for chunk in translator.feed(name, data)]
    return chunks + translator.finish()


def test_anthropic_stream_accumulates_in_the_openai_sdk(sdk: Any) -> None:
    events = anthropic_stream()
    sdk.events(events)  # the fixture itself is a valid Anthropic stream
    chunks = run_to_chat(events, include_usage=True)
    completion = sdk.chunks(chunks)

    choice = completion.choices[0]
    assert choice.message.content == "Let me check."
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls or []
    assert [(c.id, c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("toolu_1", "weather", {"city": "Paris"}),
        ("toolu_2", "now", {}),
    ]
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 125
    assert completion.usage.completion_tokens == 42
    assert completion.usage.prompt_tokens_details is not None
    assert completion.usage.prompt_tokens_details.cached_tokens == 100


def test_chunk_envelope_is_stable_and_shaped_like_openai() -> None:
    chunks = run_to_chat(anthropic_stream(), include_usage=True)
    assert {c["id"] for c in chunks} == {"chatcmpl-msg_1"}
    assert {c["created"] for c in chunks} == {111}
    assert {c["model"] for c in chunks} == {"alias"}
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all("role" not in c["choices"][0]["delta"] for c in chunks[1:-1])

    first_fragments = [
        call
        for c in chunks[:-1]
        for call in c["choices"][0]["delta"].get("tool_calls", ())
        if "id" in call
    ]
    assert first_fragments == [
        {
            "index": 0,
            "id": "toolu_1",
            "type": "function",
            "function": {"name": "weather", "arguments": ""},
        },
        {
            "index": 1,
            "id": "toolu_2",
            "type": "function",
            "function": {"name": "now", "arguments": ""},
        },
    ]
    later = [
        call
        for c in chunks[:-1]
        for call in c["choices"][0]["delta"].get("tool_calls", ())
        if "id" not in call
    ]
    assert all(set(call) == {"index", "function"} for call in later)
    assert all(set(call["function"]) == {"arguments"} for call in later)

    finishes = [c["choices"][0]["finish_reason"] for c in chunks[:-1]]
    assert finishes[:-1] == [None] * (len(finishes) - 1)
    assert finishes[-1] == "tool_calls"

    # usage: null everywhere but the final, choice-less chunk.
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["total_tokens"] == 167


def test_no_usage_chunk_unless_asked(sdk: Any) -> None:
    events = anthropic_stream(stop_reason="end_turn")
    translator = MessagesStreamToChat(model="alias", include_usage=False)
    chunks = [chunk for name, data in events for chunk in translator.feed(name, data)]
    assert translator.finish() == []
    assert all("usage" not in c for c in chunks)
    assert sdk.chunks(chunks).choices[0].finish_reason == "stop"
    # The usage is still known to the gateway for metering.
    assert translator.usage == Usage(125, 42, 100, 0)


def test_usage_property_tracks_the_stream() -> None:
    events = anthropic_stream()
    translator = MessagesStreamToChat(model="alias", include_usage=True)
    assert translator.usage is None
    translator.feed(*events[0])
    assert translator.usage == Usage(prompt_tokens=125, completion_tokens=1, cached_tokens=100)
    for name, data in events[1:]:
        translator.feed(name, data)
    assert translator.usage == Usage(prompt_tokens=125, completion_tokens=42, cached_tokens=100)


@pytest.mark.parametrize(
    ("stop_reason", "finish_reason"),
    [
        ("end_turn", "stop"),
        ("max_tokens", "length"),
        ("stop_sequence", "stop"),
        ("refusal", "content_filter"),
    ],
)
def test_stream_stop_reasons(stop_reason: Any, finish_reason: Any, sdk: Any) -> None:
    completion = sdk.chunks(run_to_chat(anthropic_stream(stop_reason), include_usage=False))
    assert completion.choices[0].finish_reason == finish_reason


def test_thinking_and_unknown_events_are_skipped(sdk: Any) -> None:
    events = anthropic_stream()
    thinking = [
        _ev(
            "content_block_start",
            index=9,
            content_block={"type": "thinking", "thinking": "", "signature": ""},
        ),
        _ev("content_block_delta", index=9, delta={"type": "thinking_delta", "thinking": "hmm"}),
        _ev("content_block_delta", index=9, delta={"type": "signature_delta", "signature": "s"}),
        _ev("content_block_stop", index=9),
        _ev("some_future_event", anything=1),
    ]
    translator = MessagesStreamToChat(model="alias", include_usage=False)
    assert len(translator.feed(*events[0])) == 1
    for name, data in thinking:
        assert translator.feed(name, data) == []


def test_error_event_becomes_an_openai_error_payload() -> None:
    translator = MessagesStreamToChat(model="alias", include_usage=True)
    data = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    assert translator.feed("error", data) == [
        {
            "error": {
                "message": "Overloaded",
                "type": "overloaded_error",
                "param": None,
                "code": None,
            }
        }
    ]


def test_finish_is_idempotent() -> None:
    translator = MessagesStreamToChat(model="alias", include_usage=True)
    assert len(translator.finish()) == 1
    assert translator.finish() == []


# -- OpenAI chunks -> Anthropic events --------------------------------------------------------


def _chunk(
    delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any
) -> dict[str, Any]:
    chunk: dict[str, Any] = {
        "id": "chatcmpl-xyz",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-x",
        "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish}],
    }
    return {**chunk, **extra}


def _call(
    index: int, *, call_id: str | None = None, name: str | None = None, args: str | None = None
) -> dict[str, Any]:
    call: dict[str, Any] = {"index": index}
    if call_id is not None:
        call["id"] = call_id
        call["type"] = "function"
    function = {k: v for k, v in (("name", name), ("arguments", args)) if v is not None}
    if function:
        call["function"] = function
    return _chunk({"tool_calls": [call]})


USAGE_CHUNK = {
    "id": "chatcmpl-xyz",
    "object": "chat.completion.chunk",
    "created": 1,
    "model": "gpt-x",
    "choices": [],
    "usage": {
        "prompt_tokens": 130,
        "completion_tokens": 12,
        "total_tokens": 142,
        "prompt_tokens_details": {"cached_tokens": 100},
    },
}


def openai_stream() -> list[dict[str, Any]]:
    return [
        _chunk({"role": "assistant", "content": ""}),
        _chunk({"content": "Hel"}),
        _chunk({"content": "lo"}),
        _call(0, call_id="call_1", name="weather", args=""),
        _call(0, args='{"city":'),
        _call(0, args='"Paris"}'),
        _call(1, call_id="call_2", name="now", args="{}"),
        _chunk({}, "tool_calls"),
        USAGE_CHUNK,
    ]


def run_to_messages(chunks: list[dict[str, Any]]) -> list[Event]:
    translator = ChatStreamToMessages(model="alias")
    events = [event for chunk in chunks for event in translator.feed(chunk)]
    return events + translator.finish()


def test_openai_stream_accumulates_in_the_anthropic_sdk(sdk: Any) -> None:
    chunks = openai_stream()
    sdk.chunks(chunks)  # the fixture itself is a valid OpenAI stream
    events = run_to_messages(chunks)
    message = sdk.events(events)
    assert message.id == "msg_xyz"
    assert message.model == "alias"
    assert [block.model_dump(exclude_none=True) for block in message.content] == [
        {"type": "text", "text": "Hello"},
        {"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "call_2", "name": "now", "input": {}},
    ]
    assert message.stop_reason == "tool_use"
    assert message.usage.input_tokens == 30
    assert message.usage.output_tokens == 12
    assert message.usage.cache_read_input_tokens == 100


def test_event_sequence_is_block_structured() -> None:
    names = [name for name, _ in run_to_messages(openai_stream())]
    assert names == [
        "message_start",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_delta",
        "content_block_stop",
        "content_block_start",
        "content_block_delta",
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]


def test_message_start_reports_zero_usage_until_known() -> None:
    events = run_to_messages(openai_stream())
    assert events[0][1]["message"]["usage"] == {
        "input_tokens": 0,
        "output_tokens": 0,
    }
    message_delta = events[-2][1]
    assert message_delta["usage"] == {
        "input_tokens": 30,
        "output_tokens": 12,
        "cache_read_input_tokens": 100,
        "cache_creation_input_tokens": 0,
    }


def test_usage_property() -> None:
    translator = ChatStreamToMessages(model="alias")
    for chunk in openai_stream()[:-1]:
        translator.feed(chunk)
    assert translator.usage is None
    translator.feed(USAGE_CHUNK)
    assert translator.usage == Usage(prompt_tokens=130, completion_tokens=12, cached_tokens=100)


@pytest.mark.parametrize(
    ("finish", "stop_reason"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("content_filter", "refusal"),
        (None, "end_turn"),
    ],
)
def test_openai_stream_stop_reasons(finish: Any, stop_reason: Any, sdk: Any) -> None:
    chunks = [_chunk({"role": "assistant", "content": "hi"}), _chunk({}, finish)]
    message = sdk.events(run_to_messages(chunks))
    assert message.stop_reason == stop_reason
    assert message.usage.output_tokens == 0


def test_empty_stream_still_forms_a_message(sdk: Any) -> None:
    translator = ChatStreamToMessages(model="alias")
    message = sdk.events(translator.finish())
    assert message.content == []
    assert message.stop_reason == "end_turn"
    assert translator.finish() == []


def test_parallel_calls_in_one_chunk_and_text_after_tools(sdk: Any) -> None:
    both = _chunk(
        {
            "tool_calls": [
                {
                    "index": 0,
                    "id": "a",
                    "type": "function",
                    "function": {"name": "f", "arguments": "{}"},
                },
                {
                    "index": 1,
                    "id": "b",
                    "type": "function",
                    "function": {"name": "g", "arguments": '{"x":1}'},
                },
            ]
        }
    )
    chunks = [both, _chunk({"content": "done"}), _chunk({}, "stop")]
    events = run_to_messages(chunks)
    message = sdk.events(events)
    assert [(b.type, getattr(b, "input", None)) for b in message.content] == [
        ("tool_use", {}),
        ("tool_use", {"x": 1}),
        ("text", None),
    ]
    # Tool calls reported with "stop" still tell Anthropic clients to run the tools.
    assert message.stop_reason == "tool_use"
    indexes = [data["index"] for name, data in events if name == "content_block_start"]
    assert indexes == [0, 1, 2]


def test_tool_name_arriving_after_arguments(sdk: Any) -> None:
    chunks = [
        _chunk({"tool_calls": [{"index": 0, "id": "c", "function": {"arguments": '{"a"'}}]}),
        _call(0, name="f", args=":1}"),
        _chunk({}, "tool_calls"),
    ]
    message = sdk.events(run_to_messages(chunks))
    assert [b.model_dump(exclude_none=True) for b in message.content] == [
        {"type": "tool_use", "id": "c", "name": "f", "input": {"a": 1}}
    ]


def test_unnamed_call_and_missing_id_still_get_a_block(sdk: Any) -> None:
    chunks = [_chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]})]
    message = sdk.events(run_to_messages(chunks))
    block = message.content[0]
    assert block.type == "tool_use"
    assert block.id.startswith("toolu_")
    assert block.name == ""


def test_refusal_delta_is_text_and_other_choices_ignored(sdk: Any) -> None:
    other = _chunk({"content": "ignored"})
    other["choices"][0]["index"] = 1
    chunks = [_chunk({"refusal": "I can't."}), other, _chunk({}, "content_filter")]
    message = sdk.events(run_to_messages(chunks))
    assert message.content[0].model_dump(exclude_none=True) == {"type": "text", "text": "I can't."}
    assert message.stop_reason == "refusal"


def test_error_chunk_becomes_an_anthropic_error_event(sdk: Any) -> None:
    translator = ChatStreamToMessages(model="alias")
    events = translator.feed(_chunk({"content": "par"}))
    error = {"error": {"message": "upstream died", "type": "server_error"}}
    assert translator.feed(error) == [
        ("error", {"type": "error", "error": {"type": "api_error", "message": "upstream died"}})
    ]
    assert translator.finish() == []
    assert translator.feed(_chunk({"content": "late"})) == []
    sdk.events(
        events + [("error", {"type": "error", "error": {"type": "api_error", "message": "x"}})]
    )
