"""Model resolution (gateway/routing.py) and the /v1/models listing."""

from __future__ import annotations

import httpx
import pytest

from tollhouse.app import create_app
from tollhouse.config import load_settings
from tollhouse.errors import ModelNotFound, ModelNotPriced
from tollhouse.gateway.routing import Router, Target
from tollhouse.pricing import load_catalog

OPENAI = {"preset": "openai", "base_url": "http://127.0.0.1:1/v1"}
ANTHROPIC = {"preset": "anthropic", "base_url": "http://127.0.0.1:1"}
CATALOG = load_catalog()


def router(**overrides) -> Router:
    overrides.setdefault("providers", {"openai": OPENAI, "anthropic": ANTHROPIC})
    settings = load_settings(env={"TOLLHOUSE_CONFIG": "/dev/null"}, **overrides)
    return Router(settings, CATALOG)


def labels(targets: tuple[Target, ...]) -> list[str]:
    return [t.label for t in targets]


# --- rule 1: a configured route, whose targets are the fallback chain -----------------


def test_route_targets_are_the_fallback_chain():
    r = router(
        models=[{"name": "smart", "targets": ["anthropic/claude-sonnet-4-5", "openai/gpt-4o"]}]
    )
    targets = r.resolve("smart")
    assert labels(targets) == ["anthropic/claude-sonnet-4-5", "openai/gpt-4o"]
    assert [t.price for t in targets] == [
        CATALOG.get("anthropic", "claude-sonnet-4-5"),
        CATALOG.get("openai", "gpt-4o"),
    ]


def test_route_wins_over_a_catalog_name():
    r = router(models=[{"name": "gpt-4o-mini", "targets": ["anthropic/claude-haiku-4-5"]}])
    assert labels(r.resolve("gpt-4o-mini")) == ["anthropic/claude-haiku-4-5"]


def test_route_target_model_may_contain_slashes():
    r = router(
        providers={"or": {"preset": "openrouter"}},
        models=[{"name": "llama", "targets": ["or/meta-llama/llama-3.3-70b-instruct"]}],
        allow_unpriced=True,
    )
    (target,) = r.resolve("llama")
    assert (target.provider, target.model) == ("or", "meta-llama/llama-3.3-70b-instruct")


@pytest.mark.parametrize("bad", ["nowhere/gpt-4o", "openai/", "gpt-4o"])
def test_route_target_naming_no_configured_provider_is_not_found(bad):
    r = router(models=[{"name": "broken", "targets": [bad]}])
    with pytest.raises(ModelNotFound) as info:
        r.resolve("broken")
    assert bad in info.value.message


def test_route_with_an_unpriced_target_is_refused():
    r = router(models=[{"name": "smart", "targets": ["openai/gpt-4o", "openai/mystery"]}])
    with pytest.raises(ModelNotPriced):
        r.resolve("smart")


# --- rule 2: provider/model ---------------------------------------------------------


def test_provider_slash_model():
    (target,) = router().resolve("anthropic/claude-haiku-4-5")
    assert (target.provider, target.model) == ("anthropic", "claude-haiku-4-5")
    assert target.price == CATALOG.get("anthropic", "claude-haiku-4-5")


def test_provider_slash_model_keeps_the_rest_of_the_name():
    r = router(providers={"openrouter": {"preset": "openrouter"}})
    (target,) = r.resolve("openrouter/openai/gpt-4o-mini")
    assert (target.provider, target.model) == ("openrouter", "openai/gpt-4o-mini")
    assert target.price == CATALOG.get("openrouter", "openai/gpt-4o-mini")


def test_slash_name_whose_head_is_not_a_provider_falls_through():
    # Not a configured provider: with one provider configured, rule 4 serves it whole.
    r = router(providers={"openrouter": {"preset": "openrouter"}})
    (target,) = r.resolve("openai/gpt-4o-mini")
    assert (target.provider, target.model) == ("openrouter", "openai/gpt-4o-mini")


# --- rule 3: a bare catalog name, served by the provider whose prices apply -----------


def test_bare_catalog_name_goes_to_its_provider():
    r = router()
    assert labels(r.resolve("gpt-4o-mini")) == ["openai/gpt-4o-mini"]
    assert labels(r.resolve("claude-haiku-4-5")) == ["anthropic/claude-haiku-4-5"]
    assert labels(r.resolve("text-embedding-3-small")) == ["openai/text-embedding-3-small"]


def test_bare_catalog_name_uses_pricing_provider_of_a_renamed_provider():
    r = router(
        providers={
            "primary": {"base_url": "http://127.0.0.1:1/v1", "pricing_provider": "openai"},
            "claude": {
                "type": "anthropic",
                "base_url": "http://127.0.0.1:1",
                "pricing_provider": "anthropic",
            },
        }
    )
    (target,) = r.resolve("gpt-4o-mini")
    assert target.label == "primary/gpt-4o-mini"
    assert target.price == CATALOG.get("openai", "gpt-4o-mini")
    assert r.resolve("claude-haiku-4-5")[0].label == "claude/claude-haiku-4-5"


def test_bare_catalog_name_of_an_unconfigured_provider_is_not_found():
    # gemini is in the catalog, but no google provider is configured (two others are).
    with pytest.raises(ModelNotFound):
        router().resolve("gemini-2.5-flash")


# --- rule 4: any bare name when exactly one provider is configured --------------------


def test_any_name_with_exactly_one_provider():
    r = router(providers={"local": {"preset": "ollama", "allow_unpriced": True}})
    (target,) = r.resolve("llama3.2:3b")
    assert (target.provider, target.model) == ("local", "llama3.2:3b")
    assert target.price is None


def test_unknown_name_with_several_providers_is_not_found():
    with pytest.raises(ModelNotFound) as info:
        router().resolve("mystery-model")
    message = info.value.message
    assert "mystery-model" in message
    assert "anthropic" in message and "openai" in message
    assert info.value.param == "model"
    assert info.value.status_code == 404


def test_no_providers_is_not_found_with_a_hint():
    with pytest.raises(ModelNotFound) as info:
        router(providers={}).resolve("gpt-4o-mini")
    assert "OPENAI_API_KEY" in info.value.message


# --- prices ---------------------------------------------------------------------------


def test_unpriced_model_is_refused():
    with pytest.raises(ModelNotPriced) as info:
        router().resolve("openai/mystery")
    assert info.value.status_code == 400
    assert info.value.param == "model"
    assert "openai/mystery" in info.value.message


def test_allow_unpriced_globally():
    (target,) = router(allow_unpriced=True).resolve("openai/mystery")
    assert target.price is None
    # Priced models keep their prices.
    assert router(allow_unpriced=True).resolve("gpt-4o-mini")[0].price is not None


def test_allow_unpriced_per_provider():
    r = router(providers={"openai": {**OPENAI, "allow_unpriced": True}, "anthropic": ANTHROPIC})
    assert r.resolve("openai/mystery")[0].price is None
    with pytest.raises(ModelNotPriced):
        r.resolve("anthropic/mystery")


def test_pricing_override_makes_a_model_priced():
    r = router(pricing={"openai/mystery": {"input": "1", "output": "2"}})
    (target,) = r.resolve("openai/mystery")
    assert target.price is not None
    assert str(target.price.input) == "1"


def test_resolution_is_stable_when_repeated():
    r = router()
    assert r.resolve("gpt-4o-mini") == r.resolve("gpt-4o-mini")
    for _ in range(3):
        with pytest.raises(ModelNotFound):
            r.resolve("mystery-model")


# --- listing --------------------------------------------------------------------------


def test_listed_models_are_routes_and_catalog_models_of_configured_providers():
    r = router(
        models=[{"name": "smart", "targets": ["openai/gpt-4o"]}],
        pricing={"openai/house-model": {"input": "1"}},
    )
    listed = dict(r.listed_models())
    assert listed["smart"] == "tollhouse"
    assert listed["gpt-4o-mini"] == "openai"
    assert listed["openai/gpt-4o-mini"] == "openai"
    assert listed["claude-haiku-4-5"] == "anthropic"
    assert listed["anthropic/claude-haiku-4-5"] == "anthropic"
    assert listed["openai/house-model"] == "openai"
    assert "gemini-2.5-flash" not in listed
    assert not any(name.startswith("google/") for name in listed)
    names = [name for name, _ in r.listed_models()]
    assert names == sorted(names)
    assert len(names) == len(set(names))


def test_every_listed_model_resolves():
    r = router(models=[{"name": "smart", "targets": ["openai/gpt-4o"]}])
    for name, _ in r.listed_models():
        assert r.resolve(name), name


async def test_v1_models_endpoint(gateway):
    response = await gateway.get("/v1/models")
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "list"
    by_id = {m["id"]: m for m in body["data"]}
    assert by_id["gpt-4o-mini"] == {
        "id": "gpt-4o-mini",
        "object": "model",
        "created": 0,
        "owned_by": "openai",
    }
    assert by_id["claude-haiku-4-5"]["owned_by"] == "anthropic"
    assert "text-embedding-3-small" in by_id
    assert not any(m["owned_by"] == "google" for m in body["data"])
    assert (await gateway.get("/models")).json() == body


async def test_v1_models_lists_routes(make_settings):
    app = create_app(make_settings(models=[{"name": "smart", "targets": ["openai/gpt-4o-mini"]}]))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            body = (await client.get("/v1/models")).json()
    assert {"id": "smart", "object": "model", "created": 0, "owned_by": "tollhouse"} in body["data"]
