"""Token usage in one shape, whichever provider reported it.

Metering and budgets must not care which wire format a request used, so both
formats normalise to `Usage`, which follows OpenAI's semantics: `prompt_tokens`
*includes* cached tokens. Anthropic reports the uncached remainder
(`input_tokens`) beside the cache reads and writes, so the three are summed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "Usage",
    "chat_usage",
    "messages_usage",
    "usage_from_chat",
    "usage_from_messages",
]


@dataclass(frozen=True)
class Usage:
    """Normalised token counts for one completion (OpenAI semantics).

    `prompt_tokens` counts every input token: uncached, cache reads and cache
    writes. `cached_tokens` is the part read from cache and
    `cache_creation_tokens` the part written to it (Anthropic's
    `cache_creation_input_tokens`, OpenAI's `cache_write_tokens`); both are
    already inside `prompt_tokens`, and are kept apart because providers
    price them differently.
    """

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    cache_creation_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def _count(value: object) -> int:
    # Providers send null or omit counts they did not measure; a bool is not a count.
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return 0


def usage_from_chat(usage: dict[str, Any] | None) -> Usage | None:
    """Read an OpenAI `usage` object; ``None`` when the provider sent none."""
    if not isinstance(usage, dict):
        return None
    details = usage.get("prompt_tokens_details")
    details = details if isinstance(details, dict) else {}
    return Usage(
        prompt_tokens=_count(usage.get("prompt_tokens")),
        completion_tokens=_count(usage.get("completion_tokens")),
        cached_tokens=_count(details.get("cached_tokens")),
        cache_creation_tokens=_count(details.get("cache_write_tokens")),
    )


def usage_from_messages(usage: dict[str, Any] | None) -> Usage | None:
    """Read an Anthropic `usage` object; ``None`` when the provider sent none."""
    if not isinstance(usage, dict):
        return None
    read = _count(usage.get("cache_read_input_tokens"))
    written = _count(usage.get("cache_creation_input_tokens"))
    return Usage(
        prompt_tokens=_count(usage.get("input_tokens")) + read + written,
        completion_tokens=_count(usage.get("output_tokens")),
        cached_tokens=read,
        cache_creation_tokens=written,
    )


def chat_usage(usage: Usage) -> dict[str, Any]:
    """Render `usage` as an OpenAI `usage` object."""
    details = {"cached_tokens": usage.cached_tokens}
    if usage.cache_creation_tokens:
        # OpenAI's newer field; older clients ignore it, and it keeps the write count.
        details["cache_write_tokens"] = usage.cache_creation_tokens
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": details,
    }


def messages_usage(usage: Usage) -> dict[str, Any]:
    """Render `usage` as an Anthropic `usage` object (input split from cache)."""
    uncached = usage.prompt_tokens - usage.cached_tokens - usage.cache_creation_tokens
    return {
        "input_tokens": max(uncached, 0),
        "output_tokens": usage.completion_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
        "cache_creation_input_tokens": usage.cache_creation_tokens,
    }
