"""Determinism rules of ``content.py`` and the prompt-token bound the gateway relies on."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from tollhouse.devupstream.content import (
    DEFAULT_REPLY_TOKENS,
    ToolSpec,
    answer_words,
    asks_for_tool,
    calculation,
    choose_tool,
    compose,
    message_text,
    prompt_tokens,
    reply_words,
    tool_call,
    tool_result,
)

text = st.text(max_size=200)
part = st.one_of(
    st.builds(lambda t: {"type": "text", "text": t}, text),
    st.builds(lambda t: {"type": "tool_result", "tool_use_id": "t", "content": t}, text),
    st.builds(lambda: {"type": "image_url", "image_url": {"url": "data:x"}}),
)
call = st.builds(
    lambda arguments: {
        "id": "c",
        "type": "function",
        "function": {"name": "f", "arguments": arguments},
    },
    text,
)
message = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["user", "assistant", "system", "tool"]),
        "content": st.one_of(text, st.lists(part, max_size=4), st.none()),
    },
    optional={"tool_calls": st.lists(call, max_size=2)},
)
limits = st.one_of(st.none(), st.integers(min_value=1, max_value=64))


@st.composite
def expressions(draw: st.DrawFn) -> str:
    """Small integers joined by + - *, with or without spaces: "3 * -2+10"."""
    numbers = draw(st.lists(st.integers(min_value=-9, max_value=99), min_size=2, max_size=6))
    expression = str(numbers[0])
    for number in numbers[1:]:
        gap = draw(st.sampled_from(["", " ", "  "]))
        expression += f"{gap}{draw(st.sampled_from('+-*'))}{gap}{number}"
    return expression


PYTHON = ToolSpec("python", {"type": "object", "properties": {"code": {"type": "string"}}})
WEATHER = ToolSpec("get_weather", {"type": "object", "properties": {"city": {"type": "string"}}})


@given(st.lists(message, min_size=1, max_size=8), text)
def test_prompt_tokens_within_byte_bound(messages: list[dict[str, Any]], system: str) -> None:
    """Gateway bound: UTF-8 bytes of the prompt + 8 per message (docs/governance.md)."""
    count = prompt_tokens(messages, system)
    text_bytes = len(system.encode()) + sum(len(message_text(m).encode()) for m in messages)
    assert 1 <= count <= text_bytes + 8 * len(messages)


@given(text, limits)
def test_reply_length_and_determinism(seed_text: str, limit: int | None) -> None:
    pieces, truncated = reply_words(seed_text, limit)
    expected = DEFAULT_REPLY_TOKENS if limit is None else min(limit, DEFAULT_REPLY_TOKENS)
    assert len(pieces) == expected
    assert truncated == (limit is not None and limit < DEFAULT_REPLY_TOKENS)
    assert pieces == reply_words(seed_text, limit)[0]
    assert "".join(pieces).split(" ") == [p.strip() for p in pieces]


@given(st.integers(min_value=1, max_value=40))
def test_tool_call_fragments_fit_the_limit(limit: int) -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer"}}}
    call = tool_call(ToolSpec("f", schema), "seed", limit)
    assert 1 <= len(call.fragments) <= limit
    assert "".join(call.fragments) == call.arguments == '{"a":' + call.arguments[5:]


def test_compose_uses_last_message() -> None:
    a = compose([{"role": "user", "content": "one"}], None, None)
    b = compose(
        [{"role": "user", "content": "zero"}, {"role": "user", "content": "one"}], None, None
    )
    assert a.text == b.text
    assert a.prompt_tokens < b.prompt_tokens


@given(
    expressions(),
    st.sampled_from(["Calculate ", "Please calculate ", "calculate\n"]),
    st.sampled_from(["", ".", "?", " for me"]),
    limits,
)
def test_calculate_calls_python_with_the_expression(
    expression: str, before: str, after: str, limit: int | None
) -> None:
    messages = [{"role": "user", "content": before + expression + after}]
    assert calculation(messages) == expression
    assert asks_for_tool(messages)
    assert choose_tool([WEATHER, PYTHON], messages) == PYTHON
    reply = compose(messages, limit, PYTHON)
    assert reply.tool_call is not None and reply.pieces == ()
    assert reply.tool_call.name == "python"
    assert orjson.loads(reply.tool_call.arguments) == {"code": f"print({expression})"}
    assert "".join(reply.tool_call.fragments) == reply.tool_call.arguments
    assert 1 <= reply.completion_tokens == len(reply.tool_call.fragments)
    assert limit is None or reply.completion_tokens <= limit
    # Without the calculator on offer, the first tool gets schema-shaped arguments.
    assert choose_tool([WEATHER], messages) == WEATHER
    other = compose(messages, limit, WEATHER).tool_call
    assert other is not None and set(orjson.loads(other.arguments)) == {"city"}


@given(text, limits)
def test_answer_is_the_result_cut_like_a_reply(result: str, limit: int | None) -> None:
    pieces, truncated = answer_words(result, limit)
    full = f"The result is {' '.join(result.split()) or 'empty'}.".split(" ")
    natural = min(len(full), DEFAULT_REPLY_TOKENS)
    assert 1 <= len(pieces) <= natural
    assert truncated == (limit is not None and limit < natural)
    assert len(pieces) == (natural if limit is None else min(limit, natural))
    assert "".join(pieces).split(" ") == [p.strip() for p in pieces] == full[: len(pieces)]


@given(st.lists(message, min_size=1, max_size=8), limits)
def test_completion_tokens_are_the_chunks(
    messages: list[dict[str, Any]], limit: int | None
) -> None:
    """Text replies and tool-result answers alike: one token per chunk, within the limit."""
    reply = compose(messages, limit, None)
    assert reply.prompt_tokens == prompt_tokens(messages)
    assert 1 <= reply.completion_tokens == len(reply.pieces)
    assert reply.completion_tokens <= min(limit or DEFAULT_REPLY_TOKENS, DEFAULT_REPLY_TOKENS)
    if reply.truncated:
        assert reply.completion_tokens == limit
    if tool_result(messages[-1]) is not None:
        assert reply.pieces[:3] == ("The", " result", " is")[: len(reply.pieces)]
    else:
        assert reply.pieces[0] != "The"
