"""``GET /catalog/models`` and ``GET /catalog/providers`` on the in-process app: public,
exact, filtered, nothing secret, in the OpenAPI document's shape, and in agreement with
what a request naming each listed model gets from the gateway."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import httpx
import jsonschema_rs
import pytest
from tests.support import decode, running

from tollhouse.admin.routes import document
from tollhouse.pricing import load_catalog

CATALOG = load_catalog()
DOC = document()
HI = [{"role": "user", "content": "hi"}]
ADMIN_KEY = "catalog-test-admin-key-0123456789abcdef"


def conforms(path: str, response: httpx.Response) -> None:
    """The answer is one the document gives for ``GET path``, and its body validates."""
    answer = DOC["paths"][path]["get"]["responses"][str(response.status_code)]
    if "$ref" in answer:
        answer = DOC["components"]["responses"][answer["$ref"].rsplit("/", 1)[1]]
    assert response.headers["content-type"] == "application/json"
    schema = answer["content"]["application/json"]["schema"]
    validator = jsonschema_rs.Draft202012Validator(
        {**schema, "components": DOC["components"]}, validate_formats=True
    )
    errors = [e.message for e in validator.iter_errors(response.json())]
    assert not errors, errors


def by_id(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {model["id"]: model for model in body["data"]}


def provider_entries(upstream_url: str, **more: Any) -> dict[str, Any]:
    """OpenAI and Anthropic on the dev upstream (what ``make_settings`` has), and ``more``."""
    return {
        "openai": {"preset": "openai", "base_url": f"{upstream_url}/v1", "api_key": "sk-up"},
        "anthropic": {"preset": "anthropic", "base_url": upstream_url, "api_key": "sk-ant-up"},
        **more,
    }


async def test_every_catalog_model_is_listed_once_with_its_exact_prices(gateway):
    response = await gateway.get("/catalog/models")
    assert response.status_code == 200
    conforms("/catalog/models", response)
    body = decode(response)
    assert (body["currency"], body["unit"]) == ("USD", "per_1m_tokens")
    assert body["count"] == len(body["data"]) == len(CATALOG)
    assert [m["id"] for m in body["data"]] == sorted(m["id"] for m in body["data"])
    # OpenAI and Anthropic are configured: their models by bare name, the rest not routable.
    assert sorted(m["catalog"] for m in body["data"]) == sorted(
        f"{p}/{m}" for p, m in CATALOG.prices
    )
    for model in body["data"]:
        owner, _, name = model["catalog"].partition("/")
        price = CATALOG.get(owner, name)
        assert price is not None
        assert model["pricing"] == {
            "input": price.input,
            "output": price.output,
            "cached_input": price.cached_input,
            "cache_write_input": price.cache_write_input,
        }, model["id"]
        assert (model["context_length"], model["max_output_tokens"]) == (
            price.context_window,
            price.max_output_tokens,
        )
        assert model["mode"] == price.mode and model["price_source"] == "catalog"
        if owner in ("openai", "anthropic"):
            assert model["id"] == name and model["routable"] and model["reason"] is None
            assert (model["providers"], model["targets"]) == ([owner], [model["catalog"]])
        else:
            assert model["id"] == model["catalog"] and not model["routable"]
            assert model["providers"] == model["targets"] == []
            assert owner in model["reason"]


async def test_prices_are_json_numbers_written_digit_for_digit(gateway):
    text = (await gateway.get("/catalog/models")).text
    # claude-3-haiku: 0.25 in, 1.25 out, 0.03 cached, 0.3125 cache write (USD per 1M).
    assert (
        '"pricing":{"input":0.25,"output":1.25,"cached_input":0.03,"cache_write_input":0.3125}'
    ) in text
    # gemini-1.5-flash-8b (not routable here, listed for its prices): 0.0375 stays 0.0375.
    assert '"pricing":{"input":0.0375,"output":0.15,"cached_input":0.01,' in text


async def test_filters(gateway):
    async def listed(**params: str) -> list[dict[str, Any]]:
        response = await gateway.get("/catalog/models", params=params)
        assert response.status_code == 200, response.text
        conforms("/catalog/models", response)
        body = response.json()
        assert body["count"] == len(body["data"])
        return list(body["data"])

    everything = await listed()
    anthropic = await listed(provider="anthropic")
    assert {m["id"] for m in anthropic} == {m for p, m in CATALOG.prices if p == "anthropic"}
    # A catalog provider no configured provider takes: its models, none routable.
    google = await listed(provider="google")
    assert len(google) == sum(p == "google" for p, _ in CATALOG.prices)
    assert not any(m["routable"] for m in google)
    embedding = await listed(mode="embedding")
    assert {m["catalog"] for m in embedding} == {
        f"{p}/{m}" for (p, m), price in CATALOG.prices.items() if price.mode == "embedding"
    }
    routable, unroutable = await listed(routable="true"), await listed(routable="false")
    assert all(m["routable"] for m in routable) and not any(m["routable"] for m in unroutable)
    assert len(routable) + len(unroutable) == len(everything)
    both = await listed(provider="openai", mode="embedding", routable="true")
    assert {m["id"] for m in both} == {
        "text-embedding-3-small",
        "text-embedding-3-large",
        "text-embedding-ada-002",
    }
    assert await listed(provider="nobody") == []
    assert await listed(mode="", routable="", provider="") == everything  # empty: no filter


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"mode": "image"}, "mode must be chat or embedding"),
        ({"routable": "yes"}, "routable must be true or false"),
        ({"routable": "1"}, "routable must be true or false"),
    ],
)
async def test_a_bad_filter_is_a_400_in_the_admin_shape(gateway, params, named):
    response = await gateway.get("/catalog/models", params=params)
    assert response.status_code == 400
    conforms("/catalog/models", response)
    assert response.json() == {"error": named, "code": "invalid_value"}


async def test_public_whatever_the_admin_key_and_the_client(make_settings):
    settings = make_settings(admin_key=ADMIN_KEY, allow_anonymous=False)
    async with running(settings) as (app, _):
        # A client from elsewhere, with no credential at all.
        transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://gw.example") as client:
            for path in ("/catalog/models", "/catalog/providers"):
                response = await client.get(path)
                assert response.status_code == 200, (path, response.text)
                conforms(path, response)
            assert (await client.get("/api/usage")).status_code == 401
            assert (await client.get("/v1/models")).status_code == 401
            other = await client.post("/catalog/models")
            assert other.status_code == 405 and other.json()["code"] == "method_not_allowed"
            assert set(other.headers["allow"].split(", ")) == {"GET", "HEAD"}


async def test_routes_overrides_and_broken_entries(make_settings, upstream):
    settings = make_settings(
        providers=provider_entries(
            upstream.url,
            openrouter={"preset": "openrouter", "api_key": "sk-or-secret-value"},
            local={"base_url": f"{upstream.url}/v1", "allow_unpriced": True},
        ),
        models=[
            {"name": "smart", "targets": ["openai/gpt-4o", "anthropic/claude-3-5-haiku-latest"]},
            {"name": "house", "targets": ["local/house-model"]},
            {"name": "broken", "targets": ["nowhere/x"]},
        ],
        pricing={
            "openai/gpt-4o-mini": {"input": "0.2", "output": "0.8", "max_output_tokens": 1000},
            "local/llama-3.1-8b": {"input": "0.05", "output": "0.08"},
            "gone/thing": {"input": "1", "output": "2"},
        },
    )
    async with running(settings) as (_, client):
        response = await client.get("/catalog/models")
        conforms("/catalog/models", response)
        models = by_id(decode(response))

    smart = models["smart"]
    assert smart["providers"] == ["openai", "anthropic"]
    assert smart["targets"] == ["openai/gpt-4o", "anthropic/claude-3-5-haiku-latest"]
    assert smart["pricing"]["input"] == Decimal("2.5") and smart["catalog"] == "openai/gpt-4o"
    # Served unpriced (allowed on the provider): no pricing, no catalog entry.
    house = models["house"]
    assert house["routable"] and house["targets"] == ["local/house-model"]
    assert (house["pricing"], house["price_source"], house["catalog"]) == (None, None, None)
    broken = models["broken"]
    assert not broken["routable"] and "nowhere/x" in broken["reason"]
    assert broken["providers"] == broken["targets"] == []
    # An override: its prices, the catalog's description of the model.
    mini = models["gpt-4o-mini"]
    assert mini["price_source"] == "configuration" and mini["catalog"] == "openai/gpt-4o-mini"
    assert mini["pricing"] == {
        "input": Decimal("0.2"),
        "output": Decimal("0.8"),
        "cached_input": None,
        "cache_write_input": None,
    }
    assert (mini["context_length"], mini["max_output_tokens"]) == (128000, 1000)
    llama = models["local/llama-3.1-8b"]  # four providers: a name no catalog has, prefixed
    assert llama["targets"] == ["local/llama-3.1-8b"] and llama["catalog"] is None
    assert llama["pricing"]["output"] == Decimal("0.08")
    assert not models["gone/thing"]["routable"]
    # OpenRouter's models by bare name, except where the name is another provider's
    # `provider/model`: `openai/gpt-4o` names OpenAI's gpt-4o (listed once, as `gpt-4o`),
    # so OpenRouter's is prefixed.
    assert models["meta-llama/llama-3.3-70b-instruct"]["providers"] == ["openrouter"]
    assert models["gpt-4o"]["targets"] == ["openai/gpt-4o"] and "openai/gpt-4o" not in models
    assert models["openrouter/openai/gpt-4o"]["targets"] == ["openrouter/openai/gpt-4o"]
    assert models["openrouter/openai/gpt-4o"]["routable"]


async def test_each_entry_is_what_a_request_naming_it_gets(make_settings, upstream):
    settings = make_settings(
        providers=provider_entries(upstream.url, local={"base_url": f"{upstream.url}/v1"}),
        models=[
            {"name": "smart", "targets": ["anthropic/claude-3-5-haiku-latest", "openai/gpt-4o"]},
            {"name": "broken", "targets": ["nowhere/x"]},
        ],
        pricing={"local/house-7b": {"input": "0.05", "output": "0.08"}},
    )
    async with running(settings) as (_, client):
        listed = (await client.get("/catalog/models")).json()["data"]
        # Three providers: a name no catalog knows needs its provider's prefix.
        assert any(m["id"] == "local/house-7b" and m["routable"] for m in listed)
        for model in listed:
            if model["mode"] == "embedding":
                path, body = "/v1/embeddings", {"model": model["id"], "input": "hi"}
            else:
                path = "/v1/chat/completions"
                body = {"model": model["id"], "messages": HI, "max_tokens": 5}
            response = await client.post(path, json=body)
            if model["routable"]:
                assert response.status_code == 200, (model["id"], response.text)
                assert response.headers["x-tollhouse-target"] == model["targets"][0]
            else:
                assert response.status_code in (400, 404), (model["id"], response.text)
                assert response.json()["error"]["code"] in ("model_not_found", "model_not_priced")


async def test_providers_tell_nothing_secret(make_settings, upstream):
    settings = make_settings(
        providers=provider_entries(
            upstream.url,
            openrouter={"preset": "openrouter", "api_key": "sk-or-secret-value"},
            internal={
                "base_url": "https://svc:pa55word@llm.corp.internal:8443/v1?token=qs-secret",
                "api_key": "sk-internal-secret",
                "headers": {"x-api-key": "header-secret"},
                "pricing_provider": "openai",
            },
            ollama={"preset": "ollama"},
        )
    )
    async with running(settings) as (_, client):
        response = await client.get("/catalog/providers")
    assert response.status_code == 200
    conforms("/catalog/providers", response)
    for secret in ("secret", "pa55word", "svc", "corp.internal", "8443", str(upstream.url)):
        assert secret not in response.text, secret
    body = response.json()
    providers = {p["name"]: p for p in body["data"]}
    assert list(providers) == ["openai", "anthropic", "openrouter", "internal", "ollama"]
    assert body["count"] == 5
    assert providers["openrouter"] == {
        "name": "openrouter",
        "type": "openai",
        "preset": "openrouter",
        "host": "openrouter.ai",
        "pricing_provider": "openrouter",
        "allow_unpriced": False,
        "models": sum(p == "openrouter" for p, _ in CATALOG.prices),
    }
    # An address the operator set may be internal: withheld, the dev upstream's included.
    assert providers["internal"]["host"] is None and providers["openai"]["host"] is None
    assert providers["internal"]["type"] == "openai"
    assert providers["internal"]["pricing_provider"] == "openai"
    assert providers["anthropic"]["type"] == "anthropic"
    # A preset's own address is public knowledge, a loopback one too.
    assert providers["ollama"]["host"] == "127.0.0.1"
    # OpenAI's models by bare name go to the first provider taking OpenAI's prices.
    assert providers["openai"]["models"] == sum(p == "openai" for p, _ in CATALOG.prices)
    assert providers["internal"]["models"] == providers["openai"]["models"]
    catalog = body["catalog"]
    assert catalog["taken_on"] == CATALOG.taken_on.isoformat()
    assert catalog["sources"] == CATALOG.sources and catalog["models"] == len(CATALOG)
    assert (catalog["currency"], catalog["unit"]) == ("USD", "per_1m_tokens")


async def test_with_no_provider_everything_is_listed_and_nothing_routable(make_settings):
    async with running(make_settings(providers={})) as (_, client):
        models = (await client.get("/catalog/models")).json()
        providers = (await client.get("/catalog/providers")).json()
    assert models["count"] == len(CATALOG)
    assert not any(m["routable"] for m in models["data"])
    assert (providers["data"], providers["count"]) == ([], 0)


def test_the_document_says_the_catalog_is_public():
    for path in ("/catalog/models", "/catalog/providers"):
        operation = DOC["paths"][path]["get"]
        assert operation["security"] == []
        assert "401" not in operation["responses"] and "403" not in operation["responses"]
    parameters = {p["name"]: p for p in DOC["paths"]["/catalog/models"]["get"]["parameters"]}
    assert set(parameters) == {"provider", "mode", "routable"}
    pricing = DOC["components"]["schemas"]["CatalogPricing"]["properties"]
    assert pricing["input"]["type"] == "number"
    assert json.dumps(DOC).count("per_1m_tokens") >= 2
