"""Checks that the official SDKs accept what the translators emit.

The translators are only as good as the clients parsing their output, so tests
validate requests, responses, chunks and events against the SDKs' own types,
and replay streams through the SDKs' own accumulators.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import ErrorResponse, Message, RawMessageStreamEvent
from anthropic.types import message_create_params as anthropic_params
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.chat import completion_create_params as openai_params
from pydantic import TypeAdapter

_EVENTS: TypeAdapter[RawMessageStreamEvent] = TypeAdapter(RawMessageStreamEvent)
_ANTHROPIC_REQUEST: dict[bool, TypeAdapter[Any]] = {
    False: TypeAdapter(anthropic_params.MessageCreateParamsNonStreaming),
    True: TypeAdapter(anthropic_params.MessageCreateParamsStreaming),
}
_OPENAI_REQUEST: dict[bool, TypeAdapter[Any]] = {
    False: TypeAdapter(openai_params.CompletionCreateParamsNonStreaming),
    True: TypeAdapter(openai_params.CompletionCreateParamsStreaming),
}


def _drain(value: Any) -> Any:
    # TypedDict validation leaves Iterable fields as lazy iterators; consume them
    # so every nested block is actually validated.
    if isinstance(value, Mapping):
        return {key: _drain(item) for key, item in value.items()}
    if isinstance(value, list | tuple | Iterator):
        return [_drain(item) for item in value]
    return value


class Sdk:
    """Validators built on the official openai and anthropic SDK types."""

    @staticmethod
    def anthropic_request(body: dict[str, Any]) -> None:
        _drain(_ANTHROPIC_REQUEST[bool(body.get("stream"))].validate_python(body))

    @staticmethod
    def openai_request(body: dict[str, Any]) -> None:
        _drain(_OPENAI_REQUEST[bool(body.get("stream"))].validate_python(body))

    @staticmethod
    def message(resp: dict[str, Any]) -> Message:
        return Message.model_validate(resp)

    @staticmethod
    def completion(resp: dict[str, Any]) -> ChatCompletion:
        return ChatCompletion.model_validate(resp)

    @staticmethod
    def chunks(chunks: list[dict[str, Any]]) -> ChatCompletion:
        """Validate every chunk and accumulate them as the openai SDK does."""
        state: ChatCompletionStreamState[None] = ChatCompletionStreamState()
        for chunk in chunks:
            list(state.handle_chunk(ChatCompletionChunk.model_validate(chunk)))
        # get_final_completion() refuses "length"/"content_filter"; the snapshot does not.
        return ChatCompletion.model_validate(state.current_completion_snapshot.model_dump())

    @staticmethod
    def events(events: list[tuple[str, dict[str, Any]]]) -> Message:
        """Validate every event and accumulate them as the anthropic SDK does."""
        snapshot = None
        json_bufs: dict[int, bytes] = {}
        for name, data in events:
            assert data["type"] == name
            if name == "ping":  # the SDK skips pings before parsing
                continue
            if name == "error":
                ErrorResponse.model_validate(data)
                continue
            event = _EVENTS.validate_python(data)
            snapshot = accumulate_event(event=event, current_snapshot=snapshot, json_bufs=json_bufs)
        assert snapshot is not None
        return Message.model_validate(snapshot.model_dump())


@pytest.fixture
def sdk() -> type[Sdk]:
    return Sdk
