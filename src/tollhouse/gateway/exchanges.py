"""How one inbound endpoint talks to one kind of provider.

An exchange turns the client's request into the provider's, and the provider's reply
(whole, or as a stream of events) back into the client's format, noting the usage on
the way. Same-format pairs pass bytes through untouched; cross-format pairs go through
``gateway.translate``. The gateway service picks one per request from ``EXCHANGES``.

==================  ===========  ===============================
inbound endpoint    provider     exchange
==================  ===========  ===============================
chat/completions    openai       ``ChatToOpenAI`` (pass-through)
chat/completions    anthropic    ``ChatToAnthropic``
messages            anthropic    ``MessagesToAnthropic`` (pass-through)
messages            openai       ``MessagesToOpenAI``
embeddings          openai       ``EmbeddingsToOpenAI`` (pass-through)
==================  ===========  ===============================
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from decimal import Decimal
from typing import Any, ClassVar, NamedTuple, Protocol

import orjson

from tollhouse.errors import BadRequest, TollhouseError, UpstreamError, anthropic_body, openai_body
from tollhouse.gateway import sse
from tollhouse.gateway.translate import (
    ChatStreamToMessages,
    MessagesStreamToChat,
    TranslationError,
    Usage,
    chat_request_to_messages,
    chat_response_to_messages,
    messages_request_to_chat,
    messages_response_to_chat,
    usage_from_chat,
    usage_from_messages,
)
from tollhouse.web.responses import exact


class StreamRelay(Protocol):
    """Per-request state of one stream being relayed to the client."""

    content_bytes: int  # bytes of generated content sent so far (bounds output tokens)
    # Set for a governed request: the exact cost of a usage, which the relay adds to the
    # usage it passes on as ``usage.cost`` where its format allows (OpenAI chunks).
    cost_of: Callable[[Usage], Decimal] | None

    @property
    def usage(self) -> Usage | None: ...

    def feed(self, event: sse.Event) -> bytes: ...
    def finish(self) -> bytes: ...
    def error(self, exc: TollhouseError) -> bytes: ...


class Exchange(Protocol):
    endpoint: ClassVar[str]
    path: ClassVar[str]

    def request(self, body: dict[str, Any], model: str, max_tokens: int) -> bytes: ...
    def response(self, raw: bytes) -> Answered: ...
    def relay(self, body: dict[str, Any]) -> StreamRelay: ...


class Answered(NamedTuple):
    """A provider's non-streamed answer: the body for the client as an object, the
    provider's bytes when they can be sent unchanged (same format), its usage and id."""

    data: dict[str, Any]
    raw: bytes | None
    usage: Usage | None
    id: str | None


def _load(raw: bytes) -> dict[str, Any]:
    try:
        parsed = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise UpstreamError("provider sent a body that is not JSON") from None
    if not isinstance(parsed, dict):
        raise UpstreamError("provider sent JSON that is not an object")
    return parsed


def _content_len(text: Any) -> int:
    return len(text.encode("utf-8")) if isinstance(text, str) else 0


def _chat_delta_bytes(chunk: dict[str, Any]) -> int:
    """Bytes of generated content in one OpenAI chunk: text, reasoning, tool calls."""
    total = 0
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") or {}
        total += _content_len(delta.get("content")) + _content_len(delta.get("reasoning_content"))
        for call in delta.get("tool_calls") or ():
            fn = call.get("function") or {}
            total += _content_len(fn.get("name")) + _content_len(fn.get("arguments"))
    return total


def _messages_delta_bytes(data: dict[str, Any]) -> int:
    """Bytes of generated content in one Anthropic ``content_block_delta``."""
    delta = data.get("delta") or {}
    return sum(_content_len(delta.get(k)) for k in ("text", "partial_json", "thinking"))


# --- OpenAI chat format towards the client -------------------------------------------


class _ChatPassRelay:
    """OpenAI chunks forwarded byte for byte; usage read from the final chunk."""

    def __init__(self, client_wants_usage: bool) -> None:
        self._client_wants_usage = client_wants_usage
        self.usage: Usage | None = None
        self.content_bytes = 0
        self.cost_of: Callable[[Usage], Decimal] | None = None

    def feed(self, event: sse.Event) -> bytes:
        if event.data == b"[DONE]":
            return event.raw
        try:
            chunk = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            return event.raw
        if not isinstance(chunk, dict):
            return event.raw
        self.content_bytes += _chat_delta_bytes(chunk)
        usage = usage_from_chat(chunk.get("usage"))
        if usage is not None:
            self.usage = usage
            # We asked for the usage chunk on the client's behalf; hide it if unasked.
            if not self._client_wants_usage and not chunk.get("choices"):
                return b""
            if self.cost_of is not None and usage.completion_tokens:
                chunk["usage"]["cost"] = exact(self.cost_of(usage))
                return sse.encode(chunk)
        return event.raw

    def finish(self) -> bytes:
        return b""

    def error(self, exc: TollhouseError) -> bytes:
        return sse.encode(openai_body(exc))


class ChatToOpenAI:
    endpoint: ClassVar[str] = "chat"
    path: ClassVar[str] = "/chat/completions"

    def request(self, body: dict[str, Any], model: str, max_tokens: int) -> bytes:
        out = dict(body)
        out["model"] = model
        if out.get("stream"):
            options = dict(out.get("stream_options") or {})
            options["include_usage"] = True
            out["stream_options"] = options
        return orjson.dumps(out)

    def response(self, raw: bytes) -> Answered:
        parsed = _load(raw)
        return Answered(parsed, raw, usage_from_chat(parsed.get("usage")), parsed.get("id"))

    def relay(self, body: dict[str, Any]) -> StreamRelay:
        options = body.get("stream_options") or {}
        return _ChatPassRelay(bool(options.get("include_usage")))


class _AnthropicToChatRelay:
    def __init__(self, model: str, include_usage: bool) -> None:
        self.cost_of: Callable[[Usage], Decimal] | None = None  # not added to these yet
        self._translator = MessagesStreamToChat(model=model, include_usage=include_usage)
        self._output_counted = False
        self.content_bytes = 0

    @property
    def usage(self) -> Usage | None:
        usage = self._translator.usage
        if usage is None or self._output_counted:
            return usage
        # Before message_delta, output_tokens is message_start's placeholder, not a count.
        return replace(usage, completion_tokens=0)

    def feed(self, event: sse.Event) -> bytes:
        data = orjson.loads(event.data) if event.data else {}
        name = event.event or (data.get("type") if isinstance(data, dict) else None) or ""
        if name == "error":
            message = (data.get("error") or {}).get("message", "provider stream error")
            raise UpstreamError(f"provider stream failed: {message}")
        if name == "content_block_delta":
            self.content_bytes += _messages_delta_bytes(data)
        elif name == "message_delta" and "output_tokens" in (data.get("usage") or {}):
            self._output_counted = True
        chunks = self._translator.feed(name, data)
        return b"".join(sse.encode(chunk) for chunk in chunks)

    def finish(self) -> bytes:
        chunks = self._translator.finish()
        return b"".join(sse.encode(chunk) for chunk in chunks) + sse.DONE

    def error(self, exc: TollhouseError) -> bytes:
        return sse.encode(openai_body(exc))


class ChatToAnthropic:
    endpoint: ClassVar[str] = "chat"
    path: ClassVar[str] = "/v1/messages"

    def request(self, body: dict[str, Any], model: str, max_tokens: int) -> bytes:
        try:
            translated = chat_request_to_messages(body, model=model, default_max_tokens=max_tokens)
        except TranslationError as exc:
            raise BadRequest(str(exc)) from None
        return orjson.dumps(translated)

    def response(self, raw: bytes) -> Answered:
        parsed = _load(raw)
        out = messages_response_to_chat(parsed, model=str(parsed.get("model", "")))
        return Answered(out, None, usage_from_messages(parsed.get("usage")), parsed.get("id"))

    def relay(self, body: dict[str, Any]) -> StreamRelay:
        options = body.get("stream_options") or {}
        return _AnthropicToChatRelay(str(body.get("model", "")), bool(options.get("include_usage")))


# --- Anthropic messages format towards the client ------------------------------------


class _MessagesPassRelay:
    def __init__(self) -> None:
        self.cost_of: Callable[[Usage], Decimal] | None = None  # not added to these yet
        self.usage: Usage | None = None
        self.content_bytes = 0
        self._input: dict[str, Any] = {}

    def feed(self, event: sse.Event) -> bytes:
        name = event.event
        if name in ("message_start", "message_delta", "content_block_delta"):
            data = orjson.loads(event.data)
            if name == "message_start":
                self._input = dict((data.get("message") or {}).get("usage") or {})
                # message_start's output_tokens is a placeholder (Anthropic sends 1); the
                # real count arrives in message_delta, or the stream is bounded by bytes.
                self._input["output_tokens"] = 0
                self.usage = usage_from_messages(self._input)
            elif name == "message_delta":
                merged = {**self._input, **(data.get("usage") or {})}
                self.usage = usage_from_messages(merged)
            else:
                self.content_bytes += _messages_delta_bytes(data)
        return event.raw

    def finish(self) -> bytes:
        return b""

    def error(self, exc: TollhouseError) -> bytes:
        return sse.encode(anthropic_body(exc), event="error")


class MessagesToAnthropic:
    endpoint: ClassVar[str] = "messages"
    path: ClassVar[str] = "/v1/messages"

    def request(self, body: dict[str, Any], model: str, max_tokens: int) -> bytes:
        out = dict(body)
        out["model"] = model
        return orjson.dumps(out)

    def response(self, raw: bytes) -> Answered:
        parsed = _load(raw)
        return Answered(parsed, raw, usage_from_messages(parsed.get("usage")), parsed.get("id"))

    def relay(self, body: dict[str, Any]) -> StreamRelay:
        return _MessagesPassRelay()


class _ChatToMessagesRelay:
    def __init__(self, model: str) -> None:
        self.cost_of: Callable[[Usage], Decimal] | None = None  # not added to these yet
        self._translator = ChatStreamToMessages(model=model)
        self.content_bytes = 0

    @property
    def usage(self) -> Usage | None:
        return self._translator.usage

    def feed(self, event: sse.Event) -> bytes:
        if event.data == b"[DONE]":
            return b""
        chunk = orjson.loads(event.data)
        if isinstance(chunk, dict) and chunk.get("error"):
            message = str((chunk["error"] or {}).get("message", "provider stream error"))
            raise UpstreamError(f"provider stream failed: {message}")
        self.content_bytes += _chat_delta_bytes(chunk)
        pairs = self._translator.feed(chunk)
        return b"".join(sse.encode(data, event=name) for name, data in pairs)

    def finish(self) -> bytes:
        return b"".join(sse.encode(data, event=name) for name, data in self._translator.finish())

    def error(self, exc: TollhouseError) -> bytes:
        return sse.encode(anthropic_body(exc), event="error")


class MessagesToOpenAI:
    endpoint: ClassVar[str] = "messages"
    path: ClassVar[str] = "/chat/completions"

    def request(self, body: dict[str, Any], model: str, max_tokens: int) -> bytes:
        try:
            return orjson.dumps(messages_request_to_chat(body, model=model))
        except TranslationError as exc:
            raise BadRequest(str(exc)) from None

    def response(self, raw: bytes) -> Answered:
        parsed = _load(raw)
        out = chat_response_to_messages(parsed, model=str(parsed.get("model", "")))
        return Answered(out, None, usage_from_chat(parsed.get("usage")), parsed.get("id"))

    def relay(self, body: dict[str, Any]) -> StreamRelay:
        return _ChatToMessagesRelay(str(body.get("model", "")))


# --- Embeddings ----------------------------------------------------------------------


class EmbeddingsToOpenAI:
    endpoint: ClassVar[str] = "embeddings"
    path: ClassVar[str] = "/embeddings"

    def request(self, body: dict[str, Any], model: str, max_tokens: int) -> bytes:
        return orjson.dumps({**body, "model": model})

    def response(self, raw: bytes) -> Answered:
        parsed = _load(raw)
        return Answered(parsed, raw, usage_from_chat(parsed.get("usage")), None)

    def relay(self, body: dict[str, Any]) -> StreamRelay:
        raise BadRequest("embeddings cannot be streamed", param="stream")


EXCHANGES: dict[tuple[str, str], Exchange] = {
    ("chat", "openai"): ChatToOpenAI(),
    ("chat", "anthropic"): ChatToAnthropic(),
    ("messages", "anthropic"): MessagesToAnthropic(),
    ("messages", "openai"): MessagesToOpenAI(),
    ("embeddings", "openai"): EmbeddingsToOpenAI(),
}
