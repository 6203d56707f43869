"""Governed keys and the fields the gateway forwards (issue 9): OpenRouter's ``models``
list is checked against the key's allow-list and reserved at its dearest entry; ``n`` and
output caps are validated before anything is reserved, on the local and the Redis meter.

Keys, budgets and allow-lists are made through the admin API; the provider is the real
dev upstream, configured as an OpenRouter provider where OpenRouter's fields matter.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from tests.governance.helpers import (
    CHAT,
    HI,
    assert_counters_match_ledger,
    auth,
    chat,
    counters,
    create_key,
    usd,
    worst_case_nanos,
)
from tests.support import reached, records, running

from tollhouse.pricing import load_catalog

CHEAP = "openai/gpt-4o-mini"
DEAR = "anthropic/claude-sonnet-4"


def openrouter_settings(make_settings: Any, upstream: Any, **extra: Any) -> Any:
    providers = {
        "openrouter": {"preset": "openrouter", "base_url": f"{upstream.url}/v1", "api_key": "k"}
    }
    return make_settings(allow_anonymous=False, providers=providers, **extra)


def body(**extra: Any) -> dict[str, Any]:
    return {"model": CHEAP, "messages": HI, "max_tokens": 16, **extra}


def worst_nanos(model: str, max_tokens: int = 16) -> int:
    """The reservation of ``body()`` if ``model`` served it: prompt bound + ``max_tokens``."""
    price = load_catalog().get("openrouter", model)
    assert price is not None
    prompt = 8 + len("role") + len("user") + len("content") + len("hi") + 8
    input_rate, output_rate = price.worst_pico_rates
    return -(-(prompt * input_rate + max_tokens * output_rate) // 1000)


async def test_openrouter_models_list_is_checked_against_the_allow_list(make_settings, upstream):
    """The issue's acceptance test: a key allowed only the cheap model cannot have
    OpenRouter fall back to another one."""
    async with running(openrouter_settings(make_settings, upstream)) as (app, client):
        key, value = await create_key(client, allowed_models=[CHEAP])
        response = await client.post(
            CHAT, json=body(models=[CHEAP, DEAR], route="fallback"), headers=auth(value)
        )
        assert response.status_code == 403, response.text
        error = response.json()["error"]
        assert (error["code"], error["param"]) == ("model_not_allowed", "models[1]")
        assert DEAR in error["message"] and "`models[1]`" in error["message"]
        assert reached(upstream) == 0
        assert await records(client, app) == []

        # The same list naming only allowed models is served.
        ok = await client.post(CHAT, json=body(models=[CHEAP]), headers=auth(value))
        assert ok.status_code == 200, ok.text
        # Allow-list entries in `provider/model` form count too.
        key2, value2 = await create_key(client, name="k2", allowed_models=[f"openrouter/{CHEAP}"])
        ok = await client.post(CHAT, json=body(models=[CHEAP]), headers=auth(value2))
        assert ok.status_code == 200, ok.text
        refused = await client.post(CHAT, json=body(models=[DEAR]), headers=auth(value2))
        assert refused.status_code == 403, refused.text


async def test_openrouter_models_list_is_reserved_at_its_dearest_entry(make_settings, upstream):
    cheap, dear = worst_nanos(CHEAP), worst_nanos(DEAR)
    assert cheap < dear
    async with running(openrouter_settings(make_settings, upstream)) as (app, client):
        budget = {"max_limit": usd(dear - 1), "reset_duration": "1h"}
        key, value = await create_key(client, budget=budget)
        response = await client.post(CHAT, json=body(models=[CHEAP, DEAR]), headers=auth(value))
        assert response.status_code == 402, response.text
        assert reached(upstream) == 0
        # Without the dear fallback the same request fits.
        response = await client.post(CHAT, json=body(models=[CHEAP]), headers=auth(value))
        assert response.status_code == 200, response.text
        await assert_counters_match_ledger(client, app, "virtual-keys", key["id"])


@pytest.mark.parametrize("n", [2.0, "2", True])
async def test_a_malformed_n_reserves_nothing(make_settings, upstream, n):
    async with running(make_settings(allow_anonymous=False)) as (app, client):
        budget = {"max_limit": Decimal("1"), "reset_duration": "1h"}
        key, value = await create_key(client, budget=budget)
        response = await chat(client, value, n=n)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == "n"
        assert reached(upstream) == 0
        for counter in await counters(client):
            assert Decimal(str(counter["reserved"])) == 0, counter


async def test_n_multiplies_the_reservation(make_settings, upstream):
    async with running(make_settings(allow_anonymous=False)) as (app, client):
        # n=2 reserves the prompt once and the output bound twice: 32 tokens of output.
        budget = {"max_limit": usd(worst_case_nanos(32) - 1), "reset_duration": "1h"}
        key, value = await create_key(client, budget=budget)
        assert (await chat(client, value, n=2)).status_code == 402, "n=2 reserves 32 output tokens"
        assert (await chat(client, value, n=1)).status_code == 200


@pytest.mark.parametrize("meter", ["local", "redis"])
@pytest.mark.parametrize("value", [10**15, 2**62, 2**63 - 1, 2**63, 10**19])
async def test_huge_output_caps_are_refused_before_any_reservation(
    make_settings, upstream, request, meter, value
):
    extra = {"redis_url": request.getfixturevalue("redis_url")} if meter == "redis" else {}
    async with running(make_settings(allow_anonymous=False, **extra)) as (app, client):
        budget = {"max_limit": Decimal("1000000"), "reset_duration": "1h"}
        rate = {"token_max_limit": 2**62, "token_reset_duration": "1h"}
        key, value_ = await create_key(client, budget=budget, rate_limit=rate)
        response = await chat(client, value_, max_tokens=value)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == "max_tokens"
        assert reached(upstream) == 0
        # The next ordinary request is admitted and settles exactly: nothing was held.
        assert (await chat(client, value_)).status_code == 200
        await assert_counters_match_ledger(client, app, "virtual-keys", key["id"])
