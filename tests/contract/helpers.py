"""What the contract tests share: the ledger read exactly, prices, SDK payloads (the dev
upstream's controls and ``wait_for`` are in ``tests/support.py``)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from tests.support import LiveServer

from tollhouse.devupstream.content import prompt_tokens
from tollhouse.pricing import load_catalog

CATALOG = load_catalog()
# The dev setup names its providers after their catalog entries (see tests/support.py).
GPT = "gpt-4o-mini"
CLAUDE = "claude-3-5-haiku-latest"
# The anthropic SDK warns (an error here) on deprecated models such as CLAUDE.
CURRENT_CLAUDE = "claude-haiku-4-5"
EMBEDDING = "text-embedding-3-small"

# Typed Any: the SDKs want their TypedDicts; plain dicts are what users write.
HELLO: Any = [{"role": "user", "content": "Say hello to Tollhouse."}]
WEATHER: Any = [{"role": "user", "content": "What is the weather in Lima today?"}]
WEATHER_PARAMETERS: Any = {
    "type": "object",
    "properties": {
        "location": {"type": "string"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["location", "unit"],
}
OPENAI_TOOL: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": WEATHER_PARAMETERS,
    },
}
ANTHROPIC_TOOL: Any = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "input_schema": WEATHER_PARAMETERS,
}


def ledger(live: LiveServer) -> list[dict[str, Any]]:
    """Every usage record, newest first, with ``cost`` parsed as an exact ``Decimal``."""
    records = live.usage()
    for record in records:
        # An integral amount parses as int; either way it never went through a float.
        assert isinstance(record["cost"], Decimal | int), record["cost"]
    return records


def only_record(live: LiveServer) -> dict[str, Any]:
    records = ledger(live)
    assert len(records) == 1, records
    return records[0]


def catalog_cost(
    provider: str, model: str, prompt: int, completion: int, cached: int = 0
) -> Decimal:
    price = CATALOG.get(provider, model)
    assert price is not None, f"{provider}/{model} is not in the catalog"
    return price.cost(prompt, completion, cached)


def assert_record(
    record: dict[str, Any],
    *,
    endpoint: str,
    provider: str,
    model: str,
    streamed: bool,
    prompt: int,
    completion: int,
    cached: int = 0,
    status: str = "success",
    http_status: int = 200,
) -> None:
    """One ledger record matches what the client saw, cost exact to the nano-dollar."""
    seen = {k: record[k] for k in ("endpoint", "provider", "model", "streamed", "status")}
    assert seen == {
        "endpoint": endpoint,
        "provider": provider,
        "model": model,
        "streamed": streamed,
        "status": status,
    }, record
    assert record["http_status"] == http_status, record
    tokens = (record["prompt_tokens"], record["completion_tokens"], record["cached_tokens"])
    assert tokens == (prompt, completion, cached), record
    assert record["priced"] is True
    assert record["cost"] == catalog_cost(provider, model, prompt, completion, cached)
    if prompt or completion:
        assert record["cost"] > 0


def assert_refused_without_record(live: LiveServer) -> None:
    """A request refused before any provider was asked leaves no usage record."""
    assert ledger(live) == []


def dev_prompt_tokens(messages: Any, system: str = "") -> int:
    """What the dev upstream reports as prompt tokens for ``messages``."""
    return prompt_tokens(messages, system)
