"""Worst-case token bounds (gateway/estimate.py) against the dev upstream's counts."""

from __future__ import annotations

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tollhouse.devupstream.content import prompt_tokens
from tollhouse.gateway.estimate import (
    PER_MESSAGE_OVERHEAD,
    output_token_bound,
    prompt_token_bound,
    text_bytes,
)

text = st.text(max_size=200)
part = st.fixed_dictionaries({"type": st.just("text"), "text": text})
content = text | st.lists(part, max_size=4)
tool_call = st.fixed_dictionaries(
    {
        "id": st.just("call_1"),
        "type": st.just("function"),
        "function": st.fixed_dictionaries({"name": st.just("f"), "arguments": text}),
    }
)
chat_message = st.one_of(
    st.fixed_dictionaries({"role": st.sampled_from(["user", "system"]), "content": content}),
    st.fixed_dictionaries(
        {"role": st.just("assistant"), "content": content | st.none()},
        optional={"tool_calls": st.lists(tool_call, min_size=1, max_size=2)},
    ),
    st.fixed_dictionaries(
        {"role": st.just("tool"), "tool_call_id": st.just("call_1"), "content": text}
    ),
)
chat_messages = st.lists(chat_message, min_size=1, max_size=6)


@given(chat_messages)
def test_prompt_bound_covers_the_dev_upstream_count(messages):
    body = {"model": "m", "messages": messages}
    assert prompt_token_bound(body) >= prompt_tokens(messages)


@given(chat_messages, text)
def test_prompt_bound_covers_the_count_with_a_system_prompt(messages, system):
    body = {"model": "m", "messages": messages, "system": system}
    assert prompt_token_bound(body) >= prompt_tokens(messages, system)


@given(chat_messages)
def test_prompt_bound_is_at_least_bytes_plus_overhead(messages):
    body = {"messages": messages}
    raw = sum(text_bytes(m) for m in messages)
    assert prompt_token_bound(body) >= raw + PER_MESSAGE_OVERHEAD * len(messages)


@given(chat_messages, chat_message)
def test_prompt_bound_grows_with_every_message(messages, extra):
    assert prompt_token_bound({"messages": [*messages, extra]}) > prompt_token_bound(
        {"messages": messages}
    )


@given(text)
def test_text_bytes_is_utf8_length(value):
    assert text_bytes(value) == len(value.encode("utf-8"))


def test_text_bytes_walks_structures():
    assert (
        text_bytes({"ab": ["cd", {"é": "€"}], "n": 12, "f": None, "b": True})
        == 2 + 2 + 2 + 3 + 1 + 2 + 1 + 1
    )
    assert text_bytes(None) == 0
    assert text_bytes(("a", "b")) == 2


def test_prompt_bound_counts_tools_input_and_response_format():
    base = prompt_token_bound({"messages": []})
    assert prompt_token_bound({"messages": [], "tools": [{"name": "abcd"}]}) == base + 4 + 4
    assert prompt_token_bound({"input": "hello"}) == base + 5
    assert prompt_token_bound({"input": ["ab", "cd"]}) == base + 4
    assert prompt_token_bound({"prompt": "xyz"}) == base + 3
    assert prompt_token_bound({"response_format": {"type": "json"}}) == base + 4 + 4


@given(st.lists(st.text(min_size=1, max_size=100), min_size=1, max_size=5))
def test_embeddings_bound_covers_the_dev_upstream_count(inputs):
    # The dev upstream counts UTF-8 bytes // 4 per string, at least 1 in total.
    counted = max(1, sum(len(s.encode()) // 4 for s in inputs))
    assert prompt_token_bound({"input": inputs}) >= counted


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(chat_messages.filter(lambda ms: any(m.get("content") for m in ms)))
def test_prompt_bound_covers_the_live_dev_upstream(upstream, messages):
    body = {"model": "gpt-4o-mini", "messages": messages, "max_tokens": 1}
    response = httpx.post(f"{upstream.url}/v1/chat/completions", json=body)
    if response.status_code != 200:  # e.g. a shape the upstream's validation refuses
        return
    assert prompt_token_bound(body) >= response.json()["usage"]["prompt_tokens"]


# --- output bound ---------------------------------------------------------------------


def test_output_bound_takes_the_largest_cap_given():
    # Providers differ in which cap they honour (an older OpenAI-compatible server may
    # know only `max_tokens`): reserving for the smaller one would let the larger escape.
    body = {"max_completion_tokens": 7, "max_tokens": 100, "max_output_tokens": 1000}
    assert output_token_bound(body, 50, 4096) == 1000
    assert output_token_bound({"max_completion_tokens": 7, "max_tokens": 100}, 50, 4096) == 100
    assert output_token_bound({"max_completion_tokens": 700, "max_tokens": 100}, 50, 4096) == 700


def test_output_bound_takes_any_one_cap():
    assert output_token_bound({"max_tokens": 100}, 50, 4096) == 100
    assert output_token_bound({"max_output_tokens": 1000}, 50, 4096) == 1000
    assert output_token_bound({"max_completion_tokens": 3}, 50, 4096) == 3


@pytest.mark.parametrize("bad", [0, -5, "10", 1.5, True, False, None, [3]])
def test_output_bound_ignores_values_that_are_not_positive_ints(bad):
    assert output_token_bound({"max_tokens": bad}, 50, 4096) == 50
    assert output_token_bound({"max_completion_tokens": bad, "max_tokens": 9}, 50, 4096) == 9


def test_output_bound_falls_back_to_model_cap_then_default():
    assert output_token_bound({}, 16384, 4096) == 16384
    assert output_token_bound({}, None, 4096) == 4096
    assert output_token_bound({}, None, 3) == 3


@given(st.integers(1, 10**7), st.none() | st.integers(1, 10**6), st.integers(1, 10**6))
def test_output_bound_is_the_request_cap_when_given(cap, model_cap, default):
    assert output_token_bound({"max_tokens": cap}, model_cap, default) == cap
