"""Deterministic replies, token counts and embeddings: a pure function of the request.

Tests and benchmarks compare bytes and token counts across runs, replicas and wire
formats, so nothing here reads a clock or a random source. The rules, also stated in
``docs/dev-upstream.md``:

- Reply: ``min(limit, DEFAULT_REPLY_TOKENS)`` words taken in order from ``WORDS``,
  starting at an offset hashed from the last message's text. One word = one token =
  one stream chunk; words after the first carry a leading space so chunks concatenate
  to the text.
- Prompt tokens: UTF-8 bytes of all message text (plus the system prompt) // 4, plus 4
  per message, at least 1. The gateway bounds prompt tokens by bytes + 8 per message,
  and this count stays below that bound for every request.
- Tool calls: when the request offers tools and the last message is a user message
  mentioning "weather" (or tool choice forces a call), the reply calls the first (or
  the named) tool with arguments filled from its JSON schema. A user message asking to
  "calculate" an arithmetic expression calls the tool named ``python`` when one is
  offered, with ``{"code": "print(<expression>)"}``.
- After a tool's result (an OpenAI ``tool`` message, or an Anthropic user turn of
  ``tool_result`` blocks) the reply is ``The result is <the result's text>.``, cut to
  the usual length: an agent loop ends with the tool's answer in the text.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

DEFAULT_REPLY_TOKENS = 16
DEFAULT_EMBEDDING_DIMENSIONS = 8
TOOL_TRIGGER = "weather"
CALCULATOR = "python"  # the tool a "calculate …" message calls, when it is offered
_CALCULATE = re.compile(r"\bcalculate\s+([-(]*[0-9][0-9+\-*/(). ]*)", re.IGNORECASE)

WORDS: tuple[str, ...] = (
    "lorem", "ipsum", "dolor", "sit", "amet", "consectetur", "adipiscing", "elit",
    "sed", "do", "eiusmod", "tempor", "incididunt", "ut", "labore", "et",
    "dolore", "magna", "aliqua", "enim", "ad", "minim", "veniam", "quis",
    "nostrud", "exercitation", "ullamco", "laboris", "nisi", "aliquip", "ex", "ea",
    "commodo", "consequat", "duis", "aute", "irure", "in", "reprehenderit", "voluptate",
    "velit", "esse", "cillum", "fugiat", "nulla", "pariatur", "excepteur", "sint",
    "occaecat", "cupidatat", "non", "proident", "sunt", "culpa", "qui", "officia",
    "deserunt", "mollit", "anim", "id", "est", "laborum", "vitae", "porta",
)  # fmt: skip

_CITIES = ("Paris", "Lisbon", "Nairobi", "Osaka", "Lima", "Oslo", "Cairo", "Quito")

# Argument JSON is streamed in fragments of about this many characters.
_FRAGMENT_CHARS = 8


@dataclass(frozen=True)
class ToolCall:
    """One function call: ``arguments`` is JSON text, ``fragments`` its streamed pieces."""

    name: str
    arguments: str
    fragments: tuple[str, ...]


@dataclass(frozen=True)
class Reply:
    """What the model "says": either text pieces or one tool call, plus token counts."""

    pieces: tuple[str, ...]
    tool_call: ToolCall | None
    truncated: bool
    prompt_tokens: int

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    @property
    def completion_tokens(self) -> int:
        """One token per emitted chunk: a word, or a tool-argument fragment."""
        if self.tool_call is not None:
            return len(self.tool_call.fragments)
        return len(self.pieces)


@dataclass(frozen=True)
class ToolSpec:
    """A tool the reply should call: its name and JSON schema for the arguments."""

    name: str
    schema: Mapping[str, Any]


def seed_of(text: str) -> int:
    """A stable 64-bit seed (Python's ``hash`` is salted per process, so not that)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def reply_words(seed_text: str, limit: int | None) -> tuple[tuple[str, ...], bool]:
    """The reply's pieces and whether ``limit`` cut it short of the default length."""
    count = DEFAULT_REPLY_TOKENS if limit is None else min(limit, DEFAULT_REPLY_TOKENS)
    start = seed_of(seed_text) % len(WORDS)
    words = [WORDS[(start + i) % len(WORDS)] for i in range(count)]
    pieces = tuple(word if i == 0 else " " + word for i, word in enumerate(words))
    return pieces, limit is not None and limit < DEFAULT_REPLY_TOKENS


def tool_call(
    tool: ToolSpec, seed_text: str, limit: int | None, given: Mapping[str, Any] | None = None
) -> ToolCall:
    """Call ``tool`` with ``given`` arguments, else schema-shaped ones, in at most
    ``limit`` fragments.

    The fragment count is the completion token count, so it never exceeds the
    request's ``max_tokens``: the gateway reserves output by that bound.
    """
    seed = seed_of(seed_text)
    chosen = dict(given) if given is not None else _arguments(tool.schema, seed)
    arguments = orjson.dumps(chosen).decode()
    pieces = max(1, math.ceil(len(arguments) / _FRAGMENT_CHARS))
    if limit is not None:
        pieces = min(pieces, limit)
    size = math.ceil(len(arguments) / pieces)
    fragments = tuple(arguments[i : i + size] for i in range(0, len(arguments), size))
    return ToolCall(name=tool.name, arguments=arguments, fragments=fragments)


def _arguments(schema: Mapping[str, Any], seed: int) -> dict[str, Any]:
    properties = schema.get("properties")
    if not isinstance(properties, dict):
        return {}
    required = schema.get("required")
    names = [n for n in required if n in properties] if isinstance(required, list) else []
    return {name: _value(properties[name], seed) for name in names or list(properties)}


def _value(prop: object, seed: int) -> object:
    if not isinstance(prop, dict):
        return _CITIES[seed % len(_CITIES)]
    enum = prop.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    kind = prop.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind in ("number", "integer"):
        return 21
    if kind == "boolean":
        return True
    if kind == "array":
        return []
    if kind == "object":
        return {}
    return _CITIES[seed % len(_CITIES)]


def content_text(content: object, *, tool_results: bool) -> str:
    """The text inside a message ``content`` (string or list of parts).

    ``tool_results`` includes the text of Anthropic ``tool_result`` blocks; the tool
    trigger leaves them out so a tool's answer never triggers another call.
    """
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    texts: list[str] = []
    for part in content:
        if isinstance(part, str):
            texts.append(part)
        elif isinstance(part, dict):
            if part.get("type") == "tool_result":
                if tool_results:
                    texts.append(content_text(part.get("content"), tool_results=True))
            elif isinstance(part.get("text"), str):
                texts.append(part["text"])
    return "\n".join(texts)


def message_text(message: Mapping[str, Any]) -> str:
    """All text a message carries, tool-call arguments included (for counting)."""
    text = content_text(message.get("content"), tool_results=True)
    calls = message.get("tool_calls")
    if isinstance(calls, list):
        for call in calls:
            function = call.get("function") if isinstance(call, dict) else None
            if isinstance(function, dict) and isinstance(function.get("arguments"), str):
                text += function["arguments"]
    return text


def prompt_tokens(messages: Sequence[Mapping[str, Any]], system: str = "") -> int:
    """``bytes // 4 + 4 per message``, at least 1; always <= bytes + 8 per message."""
    total = len(system.encode())
    total += sum(len(message_text(m).encode()) for m in messages)
    return max(1, total // 4 + 4 * len(messages))


def asks_for_tool(messages: Sequence[Mapping[str, Any]]) -> bool:
    """Whether the last message is a user turn whose own text mentions the trigger or
    asks for a calculation."""
    last = messages[-1]
    if last.get("role") != "user":
        return False
    text = content_text(last.get("content"), tool_results=False)
    return TOOL_TRIGGER in text.lower() or calculation(messages) is not None


def calculation(messages: Sequence[Mapping[str, Any]]) -> str | None:
    """The expression a last user turn asks to calculate ("Calculate 2 + 2" -> "2 + 2")."""
    last = messages[-1]
    if last.get("role") != "user":
        return None
    found = _CALCULATE.search(content_text(last.get("content"), tool_results=False))
    return found.group(1).strip(" .") if found is not None else None


def choose_tool(specs: Sequence[ToolSpec], messages: Sequence[Mapping[str, Any]]) -> ToolSpec:
    """The tool a triggered turn calls: the calculator for a calculation, else the first."""
    if calculation(messages) is not None:
        for spec in specs:
            if spec.name == CALCULATOR:
                return spec
    return specs[0]


def tool_result(message: Mapping[str, Any]) -> str | None:
    """The text of a tool's result the message carries (``None``: it carries none)."""
    if message.get("role") == "tool":
        return content_text(message.get("content"), tool_results=True)
    content = message.get("content")
    if message.get("role") == "user" and isinstance(content, list):
        results = [p for p in content if isinstance(p, dict) and p.get("type") == "tool_result"]
        if results:
            return "\n".join(content_text(p.get("content"), tool_results=True) for p in results)
    return None


def compose(
    messages: Sequence[Mapping[str, Any]],
    limit: int | None,
    tool: ToolSpec | None,
    system: str = "",
) -> Reply:
    """The whole reply to a chat or messages request; ``tool`` is the call to make, if any."""
    seed_text = message_text(messages[-1])
    tokens = prompt_tokens(messages, system)
    if tool is not None:
        expression = calculation(messages) if tool.name == CALCULATOR else None
        given = {"code": f"print({expression})"} if expression is not None else None
        return Reply((), tool_call(tool, seed_text, limit, given), False, tokens)
    result = tool_result(messages[-1])
    if result is not None:
        pieces, truncated = answer_words(result, limit)
    else:
        pieces, truncated = reply_words(seed_text, limit)
    return Reply(pieces, None, truncated, tokens)


def answer_words(result: str, limit: int | None) -> tuple[tuple[str, ...], bool]:
    """``The result is <result>.`` as pieces, cut like any reply."""
    words = f"The result is {' '.join(result.split()) or 'empty'}.".split(" ")
    natural = min(len(words), DEFAULT_REPLY_TOKENS)
    count = natural if limit is None else min(natural, limit)
    pieces = tuple(word if i == 0 else " " + word for i, word in enumerate(words[:count]))
    return pieces, count < natural  # cut by ``max_tokens``, as ``finish_reason`` tells


def embedding(data: bytes, dimensions: int) -> list[float]:
    """A unit-length vector hashed from ``data``: equal inputs, equal vectors."""
    raw = hashlib.shake_128(data).digest(2 * dimensions)
    values = [(v - 32767.5) / 32767.5 for v in struct.unpack(f"<{dimensions}H", raw)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [round(v / norm, 6) for v in values]


def embedding_base64(vector: Sequence[float]) -> str:
    """Little-endian float32s in base64, what ``encoding_format="base64"`` returns."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
