"""What a client may send through to a provider (docs/security.md).

The gateway forwards request bodies largely as they are, so every field the provider
acts on in a way that costs money or widens what a key may reach is either priced into
the reservation and checked against the key's allow-lists, or refused with a 400 naming
the field (docs/providers.md, "What is passed through"):

- ``model`` and OpenRouter's ``models`` entries: at most ``MAX_MODEL_NAME`` printable
  characters (client-chosen names become metric labels and cache keys), and no
  ``:online`` suffix (OpenRouter's per-use web search);
- ``n``: an integer from 1 to ``MAX_CHOICES``; the output bound is reserved ``n`` times;
- output caps (``max_tokens``, ``max_completion_tokens``, ``max_output_tokens``): integers
  from 1 to ``MAX_OUTPUT_TOKENS``, which keeps every estimate far inside int64 nanos;
- OpenRouter's ``models`` fallback list: each entry priced and allowed like a target of
  its own (``fallback_targets``), ``route`` only as ``"fallback"`` beside it;
- fields the provider bills per use and Tollhouse cannot price (``plugins``,
  ``web_search_options``, Anthropic's ``mcp_servers`` and ``container``, and server
  tools in ``tools``): refused;
- output billed above the catalog's text prices (``audio``, ``modalities`` other than
  ``["text"]``, OpenAI's ``service_tier: "priority"``): refused.

``check_request`` runs on every request before routing: dict lookups on the parsed
body, and a walk of ``tools`` only when there is one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tollhouse.errors import BadRequest, ModelNotPriced
from tollhouse.pricing import ModelPrice

MAX_MODEL_NAME = 256
# The largest output cap any catalog model has is 2^20 tokens; 2^24 leaves room for
# models to come while keeping n × cap × the dearest price far below 2^63 nano-dollars.
MAX_OUTPUT_TOKENS = 2**24
MAX_CHOICES = 128  # OpenAI's own limit on `n`
MAX_FALLBACK_MODELS = 8

OUTPUT_CAPS = ("max_completion_tokens", "max_tokens", "max_output_tokens")

# Billed per use by the provider, beyond tokens, at prices Tollhouse does not know.
_UNPRICEABLE = {
    "plugins": "OpenRouter plugins (web search, file parsing) are billed per use",
    "web_search_options": "web search is billed per call",
    "mcp_servers": "MCP servers are called by the provider on the key's behalf",
    "container": "code-execution containers are billed by the hour",
    "audio": "audio output is billed per audio token, above text prices,",
}
# Only these need a closer look; most requests have none of them.
_SPECIAL = frozenset({"models", "route", "tools", "modalities", "service_tier", *_UNPRICEABLE})
# Tiers billed at the catalog's prices or below (OpenAI's flex is cheaper; Anthropic's
# two tiers cost the same). OpenAI's "priority" costs more and is refused.
_STANDARD_TIERS = frozenset({"auto", "default", "flex", "standard_only"})

# Anthropic tools the client runs itself (the provider only bills their tokens); every
# other typed tool runs on Anthropic's servers, billed per use, and is refused.
_CLIENT_TOOL_PREFIXES = ("bash_", "text_editor_", "computer_", "memory_")
_CHAT_TOOL_TYPES = frozenset({"function", "custom"})


def check_request(endpoint: str, body: dict[str, Any]) -> str:
    """Refuse what cannot be priced or allowed; returns the requested model name."""
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequest("`model` is required and must be a string", param="model")
    check_model_name(model, "model")
    stream = body.get("stream")
    if stream is not None and type(stream) is not bool:
        raise BadRequest(f"`stream` must be true or false, got {_show(stream)}", param="stream")
    n = body.get("n")
    if n is not None and (type(n) is not int or not 1 <= n <= MAX_CHOICES):
        raise BadRequest(
            f"`n` must be an integer from 1 to {MAX_CHOICES} (the number of choices), "
            f"got {_show(n)}",
            param="n",
        )
    for field in OUTPUT_CAPS:
        cap = body.get(field)
        # ``type(...) is int`` refuses bool, which JSON `true` would otherwise pass as 1.
        if cap is not None and (type(cap) is not int or not 1 <= cap <= MAX_OUTPUT_TOKENS):
            raise BadRequest(
                f"`{field}` must be an integer from 1 to {MAX_OUTPUT_TOKENS} (no model "
                f"produces more), got {_show(cap)}",
                param=field,
            )
    if not _SPECIAL.isdisjoint(body):
        _check_special(endpoint, body)
    return model


def check_model_name(name: str, param: str) -> None:
    """Client-chosen names become metric labels, cache keys and ledger rows: keep them
    short and printable."""
    if len(name) > MAX_MODEL_NAME or not name.isprintable():
        raise BadRequest(
            f"`{param}` must be at most {MAX_MODEL_NAME} printable characters "
            f"(got {len(name)} characters)",
            param=param,
        )
    if name.endswith(":online"):
        raise BadRequest(
            f"`{param}`: the `:online` variant adds web search, which the provider bills "
            "per use at a price Tollhouse does not know; name the model without it",
            param=param,
        )


def fallback_models(body: dict[str, Any]) -> list[str]:
    """OpenRouter's ``models`` list (checked by ``check_request``), or ``[]``."""
    models = body.get("models")
    return models if isinstance(models, list) else []


def fallback_targets(
    models: list[str], providers: tuple[str, ...], priced: Callable[[str, str], Any]
) -> list[tuple[str, Any]]:
    """``(param, target)`` for every ``models`` entry as each provider would serve it.

    The list goes upstream as it is, so its entries are names in the provider's own
    namespace: ``priced(provider, name)`` (``Router.target``) prices each one, or raises
    ``ModelNotPriced``, re-raised here naming the entry.
    """
    out = []
    for provider in dict.fromkeys(providers):
        for index, name in enumerate(models):
            param = f"models[{index}]"
            try:
                out.append((param, priced(provider, name)))
            except ModelNotPriced as exc:
                raise ModelNotPriced(f"`{param}`: {exc.message}", param=param) from None
    return out


def dearest_price(prices: list[ModelPrice | None]) -> ModelPrice | None:
    """A price at least as high as each of ``prices`` on every kind of token: what a
    request is charged when the provider may have served any of several models."""
    known = [p for p in prices if p is not None]
    if not known:
        return None
    first = known[0]
    caps = [p.max_output_tokens for p in known if p.max_output_tokens]
    cached = [p.cached_input if p.cached_input is not None else p.input for p in known]
    writes = [p.cache_write_input for p in known if p.cache_write_input is not None]
    return ModelPrice(
        provider=first.provider,
        model=first.model,
        mode=first.mode,
        input=max(p.input for p in known),
        output=max(p.output for p in known),
        cached_input=max(cached),
        max_output_tokens=max(caps) if caps else None,
        cache_write_input=max(writes) if writes else None,
    )


def _check_special(endpoint: str, body: dict[str, Any]) -> None:
    for field, why in _UNPRICEABLE.items():
        if body.get(field) is not None:
            raise BadRequest(
                f"`{field}` is not accepted: {why} by the provider, at a price Tollhouse "
                "does not know, so it could not be reserved or charged",
                param=field,
            )
    _check_fallbacks(body)
    _check_output_kind(body)
    tools = body.get("tools")
    if isinstance(tools, list):
        _check_tools(endpoint, tools)


def _check_fallbacks(body: dict[str, Any]) -> None:
    models = body.get("models")
    route = body.get("route")
    if route is not None and (route != "fallback" or models is None):
        raise BadRequest(
            '`route` is accepted only as "fallback", beside a `models` list', param="route"
        )
    if models is None:
        return
    if not isinstance(models, list) or not 1 <= len(models) <= MAX_FALLBACK_MODELS:
        raise BadRequest(
            f"`models` must be a list of 1 to {MAX_FALLBACK_MODELS} model names",
            param="models",
        )
    for index, name in enumerate(models):
        param = f"models[{index}]"
        if not isinstance(name, str) or not name:
            raise BadRequest(f"`{param}` must be a model name", param=param)
        check_model_name(name, param)


def _check_output_kind(body: dict[str, Any]) -> None:
    modalities = body.get("modalities")
    if modalities is not None and (
        not isinstance(modalities, list) or any(m != "text" for m in modalities)
    ):
        raise BadRequest(
            '`modalities` is accepted only as ["text"]: audio output is billed per audio '
            "token, above text prices, at a price Tollhouse does not know",
            param="modalities",
        )
    tier = body.get("service_tier")
    if tier is not None and tier not in _STANDARD_TIERS:
        raise BadRequest(
            f"`service_tier` {_show(tier)} is not accepted: only tiers billed at standard "
            f"prices ({', '.join(sorted(_STANDARD_TIERS))}) can be reserved and charged",
            param="service_tier",
        )


def _check_tools(endpoint: str, tools: list[Any]) -> None:
    for index, tool in enumerate(tools):
        if not isinstance(tool, dict):
            continue
        kind = tool.get("type")
        if kind is None or _allowed_tool(endpoint, kind):
            continue
        param = f"tools[{index}].type"
        raise BadRequest(
            f"`{param}` {_show(kind)} is not accepted: tools the provider runs itself "
            "(web search, web fetch, code execution, MCP, …) are billed per use at prices "
            "Tollhouse does not know. Define the tool yourself and run it on your side.",
            param=param,
        )


def _allowed_tool(endpoint: str, kind: Any) -> bool:
    if not isinstance(kind, str):
        return False
    if endpoint == "messages":
        return kind == "custom" or kind.startswith(_CLIENT_TOOL_PREFIXES)
    return kind in _CHAT_TOOL_TYPES


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
