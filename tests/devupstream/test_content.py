"""Determinism rules of ``content.py`` and the prompt-token bound the gateway relies on."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from tollhouse.devupstream.content import (
    DEFAULT_REPLY_TOKENS,
    ToolSpec,
    compose,
    message_text,
    prompt_tokens,
    reply_words,
    tool_call,
)

text = st.text(max_size=200)
part = st.one_of(
    st.builds(lambda t: {"type": "text", "text": t}, text),
    st.builds(lambda t: {"type": "tool_result", "tool_use_id": "t", "content": t}, text),
    st.builds(lambda: {"type": "image_url", "image_url": {"url": "data:x"}}),
)
message = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["user", "assistant", "system", "tool"]),
        "content": st.one_of(text, st.lists(part, max_size=4), st.none()),
    }
)


@given(st.lists(message, min_size=1, max_size=8), text)
def test_prompt_tokens_within_byte_bound(messages: list[dict[str, Any]], system: str) -> None:
    """Gateway bound: UTF-8 bytes of the prompt + 8 per message (docs/governance.md)."""
    count = prompt_tokens(messages, system)
    text_bytes = len(system.encode()) + sum(len(message_text(m).encode()) for m in messages)
    assert 1 <= count <= text_bytes + 8 * len(messages)


@given(text, st.one_of(st.none(), st.integers(min_value=1, max_value=64)))
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
