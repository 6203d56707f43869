"""Worst-case token bounds, computed from bytes, never from a tokenizer.

A byte-level BPE token is at least one byte, so the UTF-8 length of everything a
request sends bounds its prompt tokens from above; each message adds a few tokens of
framing. The output bound is ``max_tokens`` (or ``max_completion_tokens``) or the
model's default cap, times ``n`` choices. These bounds drive the reservation of docs/governance.md
and the charge for a stream that ends without provider usage; admission and the settle
side both read them from here, so the two always agree.

``gateway.passthrough.check_request`` has refused malformed ``n`` and output caps (and
caps above 2^24 tokens) before any of this runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tollhouse.gateway.routing import Target

# Chat templates wrap each message in role markers and separators; 8 covers the
# templates of the major providers with room to spare.
PER_MESSAGE_OVERHEAD = 8
PER_REQUEST_OVERHEAD = 8
# Reservations are int64 everywhere (SQLite, Redis, counters): an estimate saturates
# here rather than overflow. Any budget is at most this, so a saturated estimate can
# only be admitted by a budget it would fill entirely.
MAX_ESTIMATE = 2**63 - 1


def text_bytes(value: Any) -> int:
    """UTF-8 bytes of every string inside ``value`` (dicts, lists, numbers included)."""
    if isinstance(value, str):
        # isascii() is O(1) in CPython: most prompts are measured without encoding.
        return len(value) if value.isascii() else len(value.encode("utf-8"))
    if isinstance(value, dict):
        total = 0
        for name, item in value.items():
            total += text_bytes(name) + text_bytes(item)
        return total
    if isinstance(value, list | tuple):
        total = 0
        for item in value:
            total += text_bytes(item)
        return total
    if value is None or isinstance(value, bool):
        return 0
    return len(str(value))


def prompt_token_bound(body: dict[str, Any]) -> int:
    """Upper bound on prompt tokens for a chat, messages or embeddings request."""
    bound = PER_REQUEST_OVERHEAD
    messages = body.get("messages")
    if isinstance(messages, list):
        bound += sum(text_bytes(m) + PER_MESSAGE_OVERHEAD for m in messages)
    for key in ("system", "tools", "functions", "input", "prompt", "response_format"):
        if key in body:
            bound += text_bytes(body[key])
    return bound


def output_token_bound(body: dict[str, Any], model_cap: int | None, default_cap: int) -> int:
    """Upper bound on output tokens of one choice: the request's own cap, else the model's.

    With several caps set, the largest: providers differ in which one they honour.
    """
    bound = 0
    for key in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
        value = body.get(key)
        if type(value) is int and value > bound:
            bound = value
    return bound or model_cap or default_cap


def choices(body: dict[str, Any]) -> int:
    """How many choices the provider generates (OpenAI's ``n``), each up to the output
    bound; the prompt is billed once."""
    n = body.get("n")
    return n if type(n) is int and n > 1 else 1


@dataclass(frozen=True, slots=True)
class Estimate:
    """The worst case one request may consume: what admission reserves."""

    cost_nanos: int
    tokens: int


def worst_case(body: dict[str, Any], targets: tuple[Target, ...], default_cap: int) -> Estimate:
    """Worst-case cost and tokens of ``body`` over every target it may reach (a fallback
    chain, an OpenRouter ``models`` list): the dearest of them."""
    prompt = prompt_token_bound(body)
    n = choices(body)
    cost = 0
    tokens = 0
    for target in targets:
        price = target.price
        cap = price.max_output_tokens if price else None
        output = output_token_bound(body, cap, default_cap) * n
        tokens = max(tokens, prompt + output)
        if price is not None:
            input_rate, output_rate = price.worst_pico_rates
            # pico-dollars → nano-dollars, rounded up: -(-x // n) is ceil(x / n).
            cost = max(cost, -(-(prompt * input_rate + output * output_rate) // 1000))
    return Estimate(min(cost, MAX_ESTIMATE), min(tokens, MAX_ESTIMATE))
