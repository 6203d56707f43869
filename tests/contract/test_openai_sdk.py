"""The official ``openai`` SDK against Tollhouse: chat, streams, tools, embeddings, models.

Every case also reads the ledger: one record per request, with the tokens the SDK saw
and the exact catalog cost.
"""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
from tests.support import LiveServer

from .helpers import (
    CLAUDE,
    EMBEDDING,
    GPT,
    HELLO,
    OPENAI_TOOL,
    WEATHER,
    assert_record,
    dev_prompt_tokens,
    ledger,
    only_record,
)

PROVIDER = {GPT: "openai", CLAUDE: "anthropic"}


@pytest.mark.parametrize("model", [GPT, CLAUDE])
def test_chat_plain(openai_client: openai.OpenAI, live_gateway: LiveServer, model: str) -> None:
    completion = openai_client.chat.completions.create(model=model, messages=HELLO, max_tokens=12)

    message = completion.choices[0].message
    assert message.role == "assistant"
    assert message.content and len(message.content.split()) == 12
    assert completion.choices[0].finish_reason == "length"
    usage = completion.usage
    assert usage is not None and usage.completion_tokens == 12
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert_record(
        only_record(live_gateway),
        endpoint="chat",
        provider=PROVIDER[model],
        model=model,
        streamed=False,
        prompt=usage.prompt_tokens,
        completion=usage.completion_tokens,
    )


@pytest.mark.parametrize("model", [GPT, CLAUDE])
def test_chat_stream_with_usage_ends_in_one_usage_chunk(
    openai_client: openai.OpenAI, live_gateway: LiveServer, model: str
) -> None:
    stream = openai_client.chat.completions.create(
        model=model, messages=HELLO, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)

    with_usage = [c for c in chunks if c.usage is not None]
    assert len(with_usage) == 1 and with_usage[0] is chunks[-1]
    assert chunks[-1].choices == []
    assert all(c.choices for c in chunks[:-1])
    assert len({c.id for c in chunks}) == 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks[:-1])
    assert len(text.split()) == 16
    assert chunks[-2].choices[0].finish_reason == "stop"
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens == 16
    assert_record(
        only_record(live_gateway),
        endpoint="chat",
        provider=PROVIDER[model],
        model=model,
        streamed=True,
        prompt=usage.prompt_tokens,
        completion=usage.completion_tokens,
    )


@pytest.mark.parametrize("model", [GPT, CLAUDE])
def test_chat_stream_without_usage_hides_the_usage_chunk(
    openai_client: openai.OpenAI, live_gateway: LiveServer, model: str
) -> None:
    # Tollhouse asks the provider for usage anyway (to meter the stream) but must not
    # hand the client a chunk it did not ask for: many clients index choices[0].
    stream = openai_client.chat.completions.create(model=model, messages=HELLO, stream=True)
    chunks = list(stream)

    assert chunks and all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)
    pieces = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]
    assert len(pieces) == 16
    assert chunks[-1].choices[0].finish_reason == "stop"
    # The client saw no usage; the ledger has the provider's own counts.
    assert_record(
        only_record(live_gateway),
        endpoint="chat",
        provider=PROVIDER[model],
        model=model,
        streamed=True,
        prompt=dev_prompt_tokens(HELLO),
        completion=len(pieces),
    )


@pytest.mark.parametrize("model", [GPT, CLAUDE])
def test_tool_call_plain(
    openai_client: openai.OpenAI, live_gateway: LiveServer, model: str
) -> None:
    completion = openai_client.chat.completions.create(
        model=model, messages=WEATHER, tools=[OPENAI_TOOL]
    )

    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert calls is not None and len(calls) == 1
    call: Any = calls[0]
    assert call.type == "function" and call.id
    assert call.function.name == "get_weather"
    arguments = json.loads(call.function.arguments)
    assert set(arguments) == {"location", "unit"} and arguments["unit"] == "celsius"
    usage = completion.usage
    assert usage is not None and usage.completion_tokens > 0
    assert_record(
        only_record(live_gateway),
        endpoint="chat",
        provider=PROVIDER[model],
        model=model,
        streamed=False,
        prompt=usage.prompt_tokens,
        completion=usage.completion_tokens,
    )


@pytest.mark.parametrize("model", [GPT, CLAUDE])
def test_tool_call_streamed_through_the_sdk_accumulator(
    openai_client: openai.OpenAI, live_gateway: LiveServer, model: str
) -> None:
    with openai_client.chat.completions.stream(
        model=model,
        messages=WEATHER,
        tools=[OPENAI_TOOL],
        stream_options={"include_usage": True},
    ) as stream:
        events = list(stream)
        final = stream.get_final_completion()

    fragments = [
        e for e in events if e.type == "tool_calls.function.arguments.delta" and e.arguments_delta
    ]
    assert len(fragments) > 1, "arguments should arrive in several fragments"
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert calls is not None and len(calls) == 1
    call: Any = calls[0]
    assert call.function.name == "get_weather" and call.id
    arguments = json.loads(call.function.arguments)
    assert set(arguments) == {"location", "unit"}
    usage = final.usage
    assert usage is not None and usage.completion_tokens == len(fragments)
    assert_record(
        only_record(live_gateway),
        endpoint="chat",
        provider=PROVIDER[model],
        model=model,
        streamed=True,
        prompt=usage.prompt_tokens,
        completion=usage.completion_tokens,
    )


def test_embeddings(openai_client: openai.OpenAI, live_gateway: LiveServer) -> None:
    result = openai_client.embeddings.create(
        model=EMBEDDING, input=["tollhouse gateway", "exact money"]
    )

    assert [item.index for item in result.data] == [0, 1]
    assert all(len(item.embedding) == 8 for item in result.data)
    assert result.data[0].embedding != result.data[1].embedding
    assert result.usage.prompt_tokens > 0
    assert_record(
        only_record(live_gateway),
        endpoint="embeddings",
        provider="openai",
        model=EMBEDDING,
        streamed=False,
        prompt=result.usage.prompt_tokens,
        completion=0,
    )


def test_models_list(openai_client: openai.OpenAI, live_gateway: LiveServer) -> None:
    models = {model.id: model for model in openai_client.models.list()}

    assert {GPT, CLAUDE, EMBEDDING, f"openai/{GPT}", f"anthropic/{CLAUDE}"} <= set(models)
    assert models[GPT].owned_by == "openai"
    assert models[CLAUDE].owned_by == "anthropic"
    assert all(model.object == "model" for model in models.values())
    assert ledger(live_gateway) == []  # listing models is not consumption


async def test_async_client_stream(live_gateway: LiveServer) -> None:
    async with openai.AsyncOpenAI(
        base_url=f"{live_gateway.url}/v1", api_key="sk-async", max_retries=0
    ) as client:
        stream = await client.chat.completions.create(
            model=GPT,
            messages=HELLO,
            max_tokens=5,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
        plain = await client.chat.completions.create(model=GPT, messages=HELLO, max_tokens=5)

    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens == 5
    assert plain.usage == usage
    streamed, whole = sorted(ledger(live_gateway), key=lambda r: not r["streamed"])
    for record, was_streamed in ((streamed, True), (whole, False)):
        assert_record(
            record,
            endpoint="chat",
            provider="openai",
            model=GPT,
            streamed=was_streamed,
            prompt=usage.prompt_tokens,
            completion=5,
        )
