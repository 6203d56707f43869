"""The official ``anthropic`` SDK against ``/v1/messages``.

A Claude model passes through to the Anthropic provider; ``gpt-4o-mini`` is translated
to OpenAI chat and back. The SDK must not be able to tell the difference.
"""

from __future__ import annotations

from typing import Any

import anthropic
import pytest
from tests.support import LiveServer

from .helpers import ANTHROPIC_TOOL, CURRENT_CLAUDE, GPT, HELLO, WEATHER, assert_record, only_record

PROVIDER = {GPT: "openai", CURRENT_CLAUDE: "anthropic"}
MODELS = pytest.mark.parametrize("model", [CURRENT_CLAUDE, GPT])


def _assert_message_recorded(live: LiveServer, model: str, usage: Any, *, streamed: bool) -> None:
    # Anthropic counts cache reads and writes apart from input_tokens; the ledger's
    # prompt_tokens includes them (OpenAI's convention).
    cached = usage.cache_read_input_tokens or 0
    written = usage.cache_creation_input_tokens or 0
    assert_record(
        only_record(live),
        endpoint="messages",
        provider=PROVIDER[model],
        model=model,
        streamed=streamed,
        prompt=usage.input_tokens + cached + written,
        completion=usage.output_tokens,
        cached=cached,
    )


@MODELS
def test_message_plain(
    anthropic_client: anthropic.Anthropic, live_gateway: LiveServer, model: str
) -> None:
    message = anthropic_client.messages.create(
        model=model,
        max_tokens=10,
        system="You are terse.",
        messages=HELLO,
    )

    assert message.type == "message" and message.role == "assistant"
    assert message.stop_reason == "max_tokens"
    assert len(message.content) == 1
    block = message.content[0]
    assert block.type == "text" and len(block.text.split()) == 10
    assert message.usage.output_tokens == 10 and message.usage.input_tokens > 0
    _assert_message_recorded(live_gateway, model, message.usage, streamed=False)


@MODELS
def test_message_stream_final_message(
    anthropic_client: anthropic.Anthropic, live_gateway: LiveServer, model: str
) -> None:
    with anthropic_client.messages.stream(model=model, max_tokens=64, messages=HELLO) as stream:
        texts = list(stream.text_stream)
        final = stream.get_final_message()

    assert len(texts) == 16
    assert final.stop_reason == "end_turn"
    block = final.content[0]
    assert block.type == "text" and block.text == "".join(texts)
    assert final.usage.output_tokens == 16 and final.usage.input_tokens > 0
    _assert_message_recorded(live_gateway, model, final.usage, streamed=True)


@MODELS
def test_tool_use_plain(
    anthropic_client: anthropic.Anthropic, live_gateway: LiveServer, model: str
) -> None:
    message = anthropic_client.messages.create(
        model=model, max_tokens=64, messages=WEATHER, tools=[ANTHROPIC_TOOL]
    )

    assert message.stop_reason == "tool_use"
    tool_uses = [block for block in message.content if block.type == "tool_use"]
    assert len(tool_uses) == 1
    use: Any = tool_uses[0]
    assert use.name == "get_weather" and use.id
    assert set(use.input) == {"location", "unit"} and use.input["unit"] == "celsius"
    _assert_message_recorded(live_gateway, model, message.usage, streamed=False)


@MODELS
def test_tool_use_streamed(
    anthropic_client: anthropic.Anthropic, live_gateway: LiveServer, model: str
) -> None:
    with anthropic_client.messages.stream(
        model=model, max_tokens=64, messages=WEATHER, tools=[ANTHROPIC_TOOL]
    ) as stream:
        partials = [e.partial_json for e in stream if e.type == "input_json"]
        final = stream.get_final_message()

    assert len(partials) > 1
    assert final.stop_reason == "tool_use"
    use: Any = final.content[-1]
    assert use.type == "tool_use" and use.name == "get_weather"
    assert set(use.input) == {"location", "unit"}
    assert final.usage.output_tokens == len(partials)
    _assert_message_recorded(live_gateway, model, final.usage, streamed=True)


async def test_async_client_translated_stream(live_gateway: LiveServer) -> None:
    async with (
        anthropic.AsyncAnthropic(
            base_url=live_gateway.url, api_key="sk-async", max_retries=0
        ) as client,
        client.messages.stream(model=GPT, max_tokens=7, messages=HELLO) as stream,
    ):
        text = "".join([piece async for piece in stream.text_stream])
        final = await stream.get_final_message()

    assert len(text.split()) == 7
    assert final.stop_reason == "max_tokens"
    assert final.usage.output_tokens == 7
    _assert_message_recorded(live_gateway, GPT, final.usage, streamed=True)
