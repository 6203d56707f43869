"""Properties: round trips preserve conversations, and streams agree with whole responses."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tollhouse.gateway.translate import (
    ChatStreamToMessages,
    MessagesStreamToChat,
    chat_request_to_messages,
    chat_response_to_messages,
    messages_request_to_chat,
    messages_response_to_chat,
)

# The sdk fixture is a stateless class, safe to share across examples.
SETTINGS = settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])

texts = st.text(min_size=1, max_size=40).filter(str.strip)
roles = st.sampled_from(["user", "assistant"])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
tool_inputs = st.dictionaries(st.text(max_size=8), json_values, max_size=4)


@st.composite
def alternating(draw: st.DrawFn) -> list[dict[str, Any]]:
    count = draw(st.integers(min_value=1, max_value=8))
    return [
        {"role": "user" if i % 2 == 0 else "assistant", "content": draw(texts)}
        for i in range(count)
    ]


@SETTINGS
@given(system=st.none() | texts, messages=alternating())
def test_alternating_conversation_round_trips_exactly(system: Any, messages: Any, sdk: Any) -> None:
    chat = {"model": "m", "messages": messages, "max_completion_tokens": 10}
    if system is not None:
        chat["messages"] = [{"role": "system", "content": system}, *messages]
    anthropic = chat_request_to_messages(chat, model="m", default_max_tokens=99)
    sdk.anthropic_request(anthropic)
    back = messages_request_to_chat(anthropic, model="m")
    sdk.openai_request(back)
    assert back == chat


@SETTINGS
@given(turns=st.lists(st.tuples(roles, texts), min_size=1, max_size=10))
def test_any_role_sequence_keeps_text_and_order(turns: Any, sdk: Any) -> None:
    chat = {"messages": [{"role": role, "content": text} for role, text in turns]}
    anthropic = chat_request_to_messages(chat, model="m", default_max_tokens=99)
    sdk.anthropic_request(anthropic)
    anthropic_roles = [m["role"] for m in anthropic["messages"]]
    assert all(a != b for a, b in zip(anthropic_roles, anthropic_roles[1:], strict=False))
    back = messages_request_to_chat(anthropic, model="m")
    assert _merged(back["messages"]) == _merged(chat["messages"])


def _merged(messages: list[dict[str, Any]]) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    for message in messages:
        content = message["content"]
        text = content if isinstance(content, str) else "".join(p["text"] for p in content)
        if out and out[-1][0] == message["role"]:
            out[-1] = (message["role"], out[-1][1] + text)
        else:
            out.append((message["role"], text))
    return out


def _split(data: st.DataObject, text: str) -> list[str]:
    cuts = sorted(data.draw(st.sets(st.integers(0, len(text)), max_size=6)))
    bounds = [0, *cuts, len(text)]
    return [text[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


@SETTINGS
@given(data=st.data(), text=texts, inputs=st.lists(tool_inputs, max_size=3))
def test_anthropic_stream_agrees_with_the_whole_response(
    data: Any, text: Any, inputs: Any, sdk: Any
) -> None:
    content: list[dict[str, Any]] = [{"type": "text", "text": text}]
    content += [
        {"type": "tool_use", "id": f"toolu_{i}", "name": f"tool{i}", "input": value}
        for i, value in enumerate(inputs)
    ]
    stop = "tool_use" if inputs else "end_turn"
    usage = {"input_tokens": 3, "output_tokens": 4, "cache_read_input_tokens": 5}
    start: dict[str, Any] = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "c",
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {**usage, "output_tokens": 1},
    }
    events: list[tuple[str, dict[str, Any]]] = [
        ("message_start", {"type": "message_start", "message": start})
    ]
    for index, block in enumerate(content):
        empty = {**block, "text": ""} if block["type"] == "text" else {**block, "input": {}}
        events.append(
            (
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": empty},
            )
        )
        if block["type"] == "text":
            deltas = [
                {"type": "text_delta", "text": piece} for piece in _split(data, block["text"])
            ]
        else:
            raw = json.dumps(block["input"]) if block["input"] else ""
            deltas = [{"type": "input_json_delta", "partial_json": p} for p in _split(data, raw)]
        for delta in deltas:
            events.append(
                (
                    "content_block_delta",
                    {"type": "content_block_delta", "index": index, "delta": delta},
                )
            )
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    events.append(
        (
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": usage,
            },
        )
    )
    events.append(("message_stop", {"type": "message_stop"}))

    translator = MessagesStreamToChat(model="a", include_usage=True, created=5)
    chunks = [chunk for name, payload in events for chunk in translator.feed(name, payload)]
    streamed = sdk.chunks(chunks + translator.finish())

    whole = sdk.completion(
        messages_response_to_chat(
            {**start, "content": content, "stop_reason": stop, "usage": usage}, model="a", created=5
        )
    )
    assert streamed.choices[0].message.content == whole.choices[0].message.content
    assert streamed.choices[0].finish_reason == whole.choices[0].finish_reason
    assert streamed.usage == whole.usage
    assert _calls(streamed) == _calls(whole) == [(f"tool{i}", v) for i, v in enumerate(inputs)]


def _calls(completion: Any) -> list[tuple[str, Any]]:
    calls = completion.choices[0].message.tool_calls or []
    return [(c.function.name, json.loads(c.function.arguments)) for c in calls]


@SETTINGS
@given(data=st.data(), text=st.text(max_size=40), inputs=st.lists(tool_inputs, max_size=3))
def test_openai_stream_agrees_with_the_whole_response(
    data: Any, text: Any, inputs: Any, sdk: Any
) -> None:
    calls: list[dict[str, Any]] = [
        {
            "id": f"call_{i}",
            "type": "function",
            "function": {"name": f"f{i}", "arguments": json.dumps(v)},
        }
        for i, v in enumerate(inputs)
    ]
    finish = "tool_calls" if calls else "stop"
    usage = {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}

    def chunk(delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
        return {
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": "g",
            "choices": [choice],
        }

    chunks = [chunk({"role": "assistant", "content": ""})]
    chunks += [chunk({"content": piece}) for piece in _split(data, text) if piece]
    for i, call in enumerate(calls):
        pieces = _split(data, call["function"]["arguments"])
        first = {
            "index": i,
            "id": call["id"],
            "type": "function",
            "function": {"name": call["function"]["name"], "arguments": pieces[0]},
        }
        chunks.append(chunk({"tool_calls": [first]}))
        chunks += [
            chunk({"tool_calls": [{"index": i, "function": {"arguments": p}}]}) for p in pieces[1:]
        ]
    chunks.append(chunk({}, finish))
    chunks.append({**chunk({}), "choices": [], "usage": usage})
    sdk.chunks(chunks)

    translator = ChatStreamToMessages(model="a")
    events = [event for c in chunks for event in translator.feed(c)] + translator.finish()
    streamed = sdk.events(events)

    message = {"role": "assistant", "content": text or None}
    if calls:
        message["tool_calls"] = calls
    completion = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "g",
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": usage,
    }
    whole = sdk.message(chat_response_to_messages(completion, model="a"))
    assert streamed.model_dump(exclude_none=True) == whole.model_dump(exclude_none=True)
