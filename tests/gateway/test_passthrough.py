"""Fields the gateway forwards to the provider are priced and checked, or refused (issue 9).

Every request goes through the in-process app to the real dev upstream (or is refused
before reaching it). A refusal is a 400 naming the field in ``param`` and in the message,
and the provider sees nothing: ``_dev/stats`` counts what reached it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.support import metric, reached, records, running

from tollhouse.gateway.passthrough import MAX_MODEL_NAME, MAX_OUTPUT_TOKENS

HI = [{"role": "user", "content": "hi"}]
CHAT = "/v1/chat/completions"
MESSAGES = "/v1/messages"


def refused(response: httpx.Response, param: str) -> str:
    """The 400 naming ``param`` (in ``param`` too, in the OpenAI shape); the message."""
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert f"`{param}`" in error["message"], error
    if response.request.url.path != MESSAGES:
        assert set(error) == {"message", "type", "param", "code"}
        assert error["param"] == param, error
    else:
        # /v1/messages answers in Anthropic's shape, which has no `param`.
        assert response.json()["type"] == "error"
    return str(error["message"])


def openrouter(upstream: Any, **extra: Any) -> dict[str, Any]:
    """A single OpenRouter provider, pointed at the dev upstream."""
    return {
        "openrouter": {
            "preset": "openrouter",
            "base_url": f"{upstream.url}/v1",
            "api_key": "sk-or-test",
            **extra,
        }
    }


# --- n -----------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [2.5, 2.0, "3", True, False, 0, -1, 129, None, [2]])
async def test_n_must_be_an_integer_in_range(gateway, upstream, n):
    body = {"model": "gpt-4o-mini", "messages": HI, "n": n}
    if n is None:
        # JSON null is "not set": OpenAI's own default of one choice.
        assert (await gateway.post(CHAT, json=body)).status_code == 200
        return
    refused(await gateway.post(CHAT, json=body), "n")
    assert reached(upstream) == 0


async def test_n_in_range_is_served(gateway):
    for n in (1, 3, 128):
        body = {"model": "gpt-4o-mini", "messages": HI, "n": n, "max_tokens": 2}
        assert (await gateway.post(CHAT, json=body)).status_code == 200


# --- output caps ---------------------------------------------------------------------------


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens", "max_output_tokens"])
@pytest.mark.parametrize("value", [10.5, 16.0, "100", True, 0, -5, {"a": 1}])
async def test_output_caps_must_be_positive_integers(gateway, upstream, field, value):
    body = {"model": "gpt-4o-mini", "messages": HI, field: value}
    refused(await gateway.post(CHAT, json=body), field)
    assert reached(upstream) == 0


async def test_anthropic_max_tokens_must_be_a_positive_integer(gateway, upstream):
    body = {"model": "claude-haiku-4-5", "messages": HI, "max_tokens": "64"}
    refused(await gateway.post(MESSAGES, json=body), "max_tokens")
    assert reached(upstream) == 0


@pytest.mark.parametrize("value", [MAX_OUTPUT_TOKENS + 1, 10**18, 2**63, 10**30])
async def test_output_caps_above_the_ceiling_are_refused(gateway, upstream, value):
    body = {"model": "gpt-4o-mini", "messages": HI, "max_tokens": value}
    message = refused(await gateway.post(CHAT, json=body), "max_tokens")
    assert str(MAX_OUTPUT_TOKENS) in message
    assert reached(upstream) == 0


async def test_output_cap_at_the_ceiling_is_served(gateway, app):
    body = {"model": "gpt-4o-mini", "messages": HI, "max_completion_tokens": MAX_OUTPUT_TOKENS}
    assert (await gateway.post(CHAT, json=body)).status_code == 200
    (record,) = await records(gateway, app)
    assert record["completion_tokens"] == 16


# --- OpenRouter routing fields ---------------------------------------------------------------


async def test_openrouter_models_list_is_charged_at_its_dearest_entry(make_settings, upstream):
    settings = make_settings(providers=openrouter(upstream))
    async with running(settings) as (app, client):
        body = {
            "model": "openai/gpt-4o-mini",
            "models": ["openai/gpt-4o-mini", "anthropic/claude-sonnet-4"],
            "route": "fallback",
            "messages": HI,
            "max_tokens": 5,
        }
        response = await client.post(CHAT, json=body)
        assert response.status_code == 200, response.text
        (record,) = await records(client, app)
        # The provider may have served any entry: the record is charged at the dearest.
        dearest = app.services.catalog.get("openrouter", "anthropic/claude-sonnet-4")
        assert record["cost"] == dearest.cost(4, 5)
        assert record["model"] == "openai/gpt-4o-mini"


async def test_openrouter_models_entries_must_be_priced(make_settings, upstream):
    settings = make_settings(providers=openrouter(upstream))
    async with running(settings) as (_, client):
        body = {"model": "openai/gpt-4o-mini", "models": ["someone/unpriced"], "messages": HI}
        response = await client.post(CHAT, json=body)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == "models[0]"
        assert response.json()["error"]["code"] == "model_not_priced"
        assert reached(upstream) == 0


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"models": "openai/gpt-4o"}, "models"),
        ({"models": []}, "models"),
        ({"models": [7]}, "models[0]"),
        ({"models": ["openai/gpt-4o-mini", "x" * (MAX_MODEL_NAME + 1)]}, "models[1]"),
        ({"models": ["openai/gpt-4o-mini:online"]}, "models[0]"),
        ({"models": ["openai/gpt-4o-mini"] * 9}, "models"),
        ({"route": "fallback"}, "route"),
        ({"models": ["openai/gpt-4o-mini"], "route": "cheapest"}, "route"),
        ({"plugins": [{"id": "web"}]}, "plugins"),
        ({"plugins": []}, "plugins"),
        ({"web_search_options": {}}, "web_search_options"),
        ({"model": "openai/gpt-4o-mini:online"}, "model"),
    ],
)
async def test_openrouter_fields_refused(make_settings, upstream, extra, param):
    settings = make_settings(providers=openrouter(upstream, allow_unpriced=True))
    async with running(settings) as (_, client):
        body = {"model": "openai/gpt-4o-mini", "messages": HI, **extra}
        refused(await client.post(CHAT, json=body), param)
        assert reached(upstream) == 0


# --- tools the provider runs (and bills) itself -----------------------------------------------


def _custom_tool(name: str = "lookup") -> dict[str, Any]:
    return {"name": name, "input_schema": {"type": "object", "properties": {}}}


@pytest.mark.parametrize(
    "server_tool",
    [
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 5},
        {"type": "web_fetch_20250910", "name": "web_fetch"},
        {"type": "code_execution_20250825", "name": "code_execution"},
        {"type": "tool_search_tool_regex_20251119", "name": "tool_search"},
        {"type": "advisor_20260301", "name": "advisor"},
        {"type": "mcp_toolset", "mcp_server_name": "x"},
        {"type": "some_future_tool_20300101", "name": "future"},
        {"type": 5, "name": "odd"},
    ],
)
async def test_anthropic_server_tools_are_refused(gateway, upstream, server_tool):
    body = {
        "model": "claude-haiku-4-5",
        "messages": HI,
        "max_tokens": 8,
        "tools": [_custom_tool(), {**_custom_tool("b"), "type": "custom"}, server_tool],
    }
    refused(await gateway.post(MESSAGES, json=body), "tools[2].type")
    assert reached(upstream) == 0


@pytest.mark.parametrize("field", ["mcp_servers", "container"])
async def test_anthropic_mcp_servers_and_containers_are_refused(gateway, upstream, field):
    value: Any = [{"type": "url", "url": "https://mcp.example", "name": "x"}]
    body = {"model": "claude-haiku-4-5", "messages": HI, "max_tokens": 8, field: value}
    refused(await gateway.post(MESSAGES, json=body), field)
    assert reached(upstream) == 0


async def test_anthropic_client_tools_pass(gateway):
    tools = [
        _custom_tool(),
        {"type": "bash_20250124", "name": "bash"},
        {"type": "text_editor_20250728", "name": "str_replace_based_edit_tool"},
        {"type": "memory_20250818", "name": "memory"},
        {
            "type": "computer_20250124",
            "name": "computer",
            "display_width_px": 1024,
            "display_height_px": 768,
        },
    ]
    body = {"model": "claude-haiku-4-5", "messages": HI, "max_tokens": 8, "tools": tools}
    response = await gateway.post(MESSAGES, json=body)
    assert response.status_code == 200, response.text


async def test_chat_tools_other_than_functions_are_refused(gateway, upstream):
    function = {"type": "function", "function": {"name": "f", "parameters": {}}}
    body = {
        "model": "gpt-4o-mini",
        "messages": HI,
        "tools": [function, {"type": "web_search_preview"}],
    }
    refused(await gateway.post(CHAT, json=body), "tools[1].type")
    assert reached(upstream) == 0
    body["tools"] = [function]
    assert (await gateway.post(CHAT, json=body)).status_code == 200


# --- client-chosen model names (allow_unpriced) ------------------------------------------------


@pytest.mark.parametrize(
    "model", ["x" * (MAX_MODEL_NAME + 1), "house\nmodel", "house\x00model", "a\u200bb"]
)
async def test_model_names_are_short_and_printable(make_settings, upstream, model):
    async with running(make_settings(allow_unpriced=True)) as (_, client):
        body = {"model": f"openai/{model}", "messages": HI}
        refused(await client.post(CHAT, json=body), "model")
        assert reached(upstream) == 0


async def test_model_name_at_the_cap_is_served(make_settings):
    async with running(make_settings(allow_unpriced=True)) as (_, client):
        model = "openai/" + "m" * (MAX_MODEL_NAME - len("openai/"))
        response = await client.post(CHAT, json={"model": model, "messages": HI})
        assert response.status_code == 200, response.text


def _series(text: str, name: str) -> list[dict[str, str]]:
    return [
        sample.labels
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    ]


async def test_unpriced_model_names_keep_metrics_and_router_cache_bounded(make_settings):
    from tollhouse.gateway.routing import CACHE_LIMIT
    from tollhouse.ops.metrics import UNPRICED_MODEL_LABELS

    async with running(make_settings(allow_unpriced=True, max_retries=0)) as (app, client):
        names = [f"openai/house-{i}" for i in range(CACHE_LIMIT + 500)]
        limit = asyncio.Semaphore(16)

        async def send(model: str) -> None:
            async with limit:
                body = {"model": model, "messages": HI, "max_tokens": 1}
                response = await client.post(CHAT, json=body)
                assert response.status_code == 200, response.text

        await asyncio.gather(*(send(name) for name in names))
        assert app.services.gateway.router.cache_size <= CACHE_LIMIT
        text = (await client.get("/metrics")).text
        models = {labels["model"] for labels in _series(text, "tollhouse_requests_total")}
        assert len(models) <= UNPRICED_MODEL_LABELS + 1
        assert "_other" in models
        assert "house-0" in models  # the first ones keep their own series
        # Every request is still counted, under its own label or under "other".
        assert await metric(client, "tollhouse_unpriced_requests_total") == len(names)
        # A priced model keeps its own label however many unpriced names came before.
        await client.post(CHAT, json={"model": "gpt-4o-mini", "messages": HI})
        text = (await client.get("/metrics")).text
        assert "gpt-4o-mini" in {s["model"] for s in _series(text, "tollhouse_requests_total")}


# --- output priced above text ------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"audio": {"voice": "alloy", "format": "wav"}}, "audio"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"modalities": "audio"}, "modalities"),
        ({"service_tier": "priority"}, "service_tier"),
        ({"service_tier": 3}, "service_tier"),
    ],
)
async def test_output_billed_above_text_prices_is_refused(gateway, upstream, extra, param):
    body = {"model": "gpt-4o-mini", "messages": HI, **extra}
    refused(await gateway.post(CHAT, json=body), param)
    assert reached(upstream) == 0


@pytest.mark.parametrize(
    "extra",
    [
        {"modalities": ["text"]},
        {"service_tier": "auto"},
        {"service_tier": "default"},
        {"service_tier": "flex"},
    ],
)
async def test_text_output_and_standard_tiers_pass(gateway, extra):
    body = {"model": "gpt-4o-mini", "messages": HI, **extra}
    response = await gateway.post(CHAT, json=body)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("tier", ["auto", "standard_only"])
async def test_anthropic_service_tiers_pass(gateway, tier):
    body = {"model": "claude-haiku-4-5", "messages": HI, "max_tokens": 8, "service_tier": tier}
    response = await gateway.post(MESSAGES, json=body)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("stream", ["yes", 1, -1, [], {}, "false"])
@pytest.mark.parametrize(("path", "model"), [(CHAT, "claude-haiku-4-5"), (MESSAGES, "gpt-4o-mini"),
                                             (CHAT, "gpt-4o-mini")])  # fmt: skip
async def test_stream_must_be_a_boolean(gateway, upstream, stream, path, model):
    # Translators forwarded any truthy value as `stream: true` while the gateway waited
    # for one JSON body: a 502 for the client's mistake.
    body = {"model": model, "messages": HI, "max_tokens": 8, "stream": stream}
    refused(await gateway.post(path, json=body), "stream")
    assert reached(upstream) == 0


@pytest.mark.parametrize("tools", [True, -1, 1e308, "x", {}])
@pytest.mark.parametrize(("path", "model"), [(CHAT, "claude-haiku-4-5"), (MESSAGES, "gpt-4o-mini")])
async def test_tools_that_are_not_a_list_are_400(gateway, upstream, tools, path, model):
    body = {"model": model, "messages": HI, "max_tokens": 8, "tools": tools}
    response = await gateway.post(path, json=body)
    assert response.status_code == 400, response.text
    assert reached(upstream) == 0
