"""``tollhouse smoke`` against a real gateway (uvicorn on loopback, the dev upstream behind
it): what passes, what fails, and that it keeps to its deadline."""

from __future__ import annotations

import json
import re
import time
from decimal import Decimal
from typing import Any

import httpx
import pytest
from tests.support import LiveServer, reached, scenario

from tollhouse.cli.processes import free_port
from tollhouse.cli.smoke import Answer, chat_verdict, gateway_url
from tollhouse.pricing import load_catalog

ADMIN_KEY = "smoke-test-admin-key-0123456789abcdef"
LINE = re.compile(r"(?P<name>\w+) +(?P<status>pass|fail|skip) +(?P<ms>\d+) ms  (?P<detail>.*)")


def checks(output: str) -> dict[str, tuple[str, str]]:
    """{check: (status, detail)} from the text output, every line in the one format."""
    found = {}
    for text in output.splitlines():
        match = LINE.fullmatch(text)
        assert match, text
        found[match["name"]] = (match["status"], match["detail"])
    assert list(found) == ["healthz", "health", "catalog", "chat"]
    return found


def smoke(invoke, url: str, *args: str, env: dict[str, str] | None = None):
    started = time.monotonic()
    result = invoke("smoke", "--url", url, *args, config_file=None, env=env)
    return result, time.monotonic() - started


def new_key(server: LiveServer, **fields: Any) -> str:
    response = httpx.post(
        f"{server.url}/api/governance/virtual-keys", json={"name": "smoke", **fields}
    )
    assert response.status_code == 201, response.text
    return str(response.json()["virtual_key"]["value"])


@pytest.fixture
def governed(make_settings):
    """A gateway that serves virtual keys only."""
    with LiveServer(make_settings(allow_anonymous=False)) as server:
        yield server


def test_probes_and_catalog_pass_without_a_key(live_gateway, invoke):
    result, _ = smoke(invoke, live_gateway.url)
    assert result.exit_code == 0, result.output
    found = checks(result.output)
    assert found["healthz"] == ("pass", "ok")
    # Loopback and no admin key on the gateway: /health answers.
    assert found["health"] == ("pass", "database connected, redis not_configured")
    assert found["catalog"][0] == "pass" and found["catalog"][1].endswith("routable models")
    assert found["chat"][0] == "skip"


def test_one_request_through_the_gateway_with_the_cheapest_model(governed, invoke, upstream):
    key = new_key(governed)
    # An SDK's base URL (…/v1/) is taken as the gateway's address.
    result, _ = smoke(invoke, f"{governed.url}/v1/", "--key", key, "--json")
    assert result.exit_code == 0, result.output
    assert key not in result.output
    report = json.loads(result.output)
    assert report["passed"] is True and report["url"] == governed.url
    chat = report["checks"][3]
    # The cheapest chat model the configured providers (OpenAI, Anthropic) serve.
    catalog = load_catalog()
    _, _, cheapest = min(
        (price.output, price.input, model)
        for (provider, model), price in catalog.prices.items()
        if provider in ("openai", "anthropic") and price.mode == "chat"
    )
    assert chat["name"] == "chat" and chat["status"] == "pass"
    assert chat["detail"].startswith(f"{cheapest}: 200 via ")
    assert reached(upstream) == 1
    records = governed.usage()
    assert len(records) == 1 and records[0]["model"] == cheapest
    assert records[0]["cost"] > Decimal(0)


def test_the_model_is_one_the_key_may_name(governed, invoke):
    key = new_key(governed, allowed_models=["claude-3-5-haiku-latest"])
    result, _ = smoke(invoke, governed.url, "--key", key)
    assert result.exit_code == 0, result.output
    assert checks(result.output)["chat"] == (
        "pass",
        "claude-3-5-haiku-latest: 200 via anthropic/claude-3-5-haiku-latest",
    )
    result, _ = smoke(invoke, governed.url, "--key", key, "--model", "gpt-4o")
    assert result.exit_code == 1
    status, detail = checks(result.output)["chat"]
    assert status == "fail" and detail.startswith("gpt-4o: 403 model_not_allowed")


def test_a_key_out_of_budget_is_reachable_and_governed(governed, invoke, upstream):
    key = new_key(governed, budget={"max_limit": 0.000000001, "reset_duration": "1d"})
    result, _ = smoke(invoke, governed.url, "--key", key, "--model", "gpt-4o-mini")
    assert result.exit_code == 0, result.output
    status, detail = checks(result.output)["chat"]
    assert status == "pass"
    assert detail.startswith("gpt-4o-mini: 402 budget_exceeded")
    assert detail.endswith("(reachable and governed)")
    assert reached(upstream) == 0


def test_a_wrong_key_fails(governed, invoke):
    result, _ = smoke(invoke, governed.url, "--key", "th-not-a-key-of-this-gateway")
    assert result.exit_code == 1
    found = checks(result.output)
    assert found["chat"][0] == "fail" and "401 invalid_api_key" in found["chat"][1]
    assert [found[name][0] for name in ("healthz", "health", "catalog")] == ["pass"] * 3


def test_the_key_can_come_from_the_environment(governed, invoke):
    key = new_key(governed)
    result, _ = smoke(invoke, governed.url, env={"TOLLHOUSE_SMOKE_KEY": key})
    assert result.exit_code == 0, result.output
    assert checks(result.output)["chat"][0] == "pass"


def test_nothing_listening_fails_at_once(invoke):
    result, elapsed = smoke(invoke, f"http://127.0.0.1:{free_port()}", "--key", "th-x")
    assert result.exit_code == 1
    found = checks(result.output)
    assert found["healthz"][0] == "fail" and "Connect" in found["healthz"][1]
    assert {found[name][0] for name in ("health", "catalog", "chat")} == {"skip"}
    assert elapsed < 5


def test_a_slow_gateway_fails_within_the_deadline(governed, invoke, upstream):
    key = new_key(governed)
    scenario(upstream, latency_ms=5000)
    result, elapsed = smoke(invoke, governed.url, "--key", key, "--timeout", "1.5")
    assert result.exit_code == 1
    found = checks(result.output)
    assert found["chat"] == ("fail", "no answer within the 1.5 s deadline")
    assert [found[name][0] for name in ("healthz", "health", "catalog")] == ["pass"] * 3
    assert elapsed < 3


def test_health_with_and_without_the_admin_key(make_settings, invoke):
    with LiveServer(make_settings(admin_key=ADMIN_KEY)) as server:
        result, _ = smoke(invoke, server.url)
        assert result.exit_code == 0, result.output
        status, detail = checks(result.output)["health"]
        assert status == "skip" and "--admin-key" in detail

        result, _ = smoke(invoke, server.url, env={"TOLLHOUSE_ADMIN_KEY": ADMIN_KEY})
        assert result.exit_code == 0, result.output
        assert checks(result.output)["health"][0] == "pass"

        result, _ = smoke(invoke, server.url, "--admin-key", "x" * 40)
        assert result.exit_code == 1
        status, detail = checks(result.output)["health"]
        assert status == "fail" and detail.startswith("401 invalid_api_key")


def test_an_unhealthy_dependency_fails(make_settings, invoke, redis_url, redis_server):
    with LiveServer(make_settings(redis_url=redis_url)) as server:
        result, _ = smoke(invoke, server.url)
        assert checks(result.output)["health"] == ("pass", "database connected, redis connected")
        redis_server.stop()  # the fixture starts it again for the next test
        result, _ = smoke(invoke, server.url)
    assert result.exit_code == 1
    status, detail = checks(result.output)["health"]
    assert status == "fail" and detail.startswith("database connected, redis error: ")


def test_a_url_that_is_not_http_is_a_usage_error(invoke):
    result, _ = smoke(invoke, "ftp://gw.example.com")
    assert result.exit_code == 2
    assert "must be an http:// or https:// URL" in result.output


def test_urls_and_verdicts():
    assert gateway_url("https://gw.example.com/v1/") == "https://gw.example.com"
    assert gateway_url(" http://127.0.0.1:4000/ ") == "http://127.0.0.1:4000"
    credits = {
        "error": {"message": "no credits", "type": "billing", "code": "insufficient_credits"}
    }
    assert chat_verdict(Answer(402, credits, "", {}))[0] == "pass"
    other = {"error": {"message": "pay", "type": "billing", "code": "payment_required"}}
    assert chat_verdict(Answer(402, other, "", {})) == ("fail", "402 payment_required: pay")
    assert chat_verdict(Answer(429, None, "slow down", {})) == ("fail", "429: slow down")


def test_no_model_to_ask_fails_naming_the_option(make_settings, invoke):
    with LiveServer(make_settings(providers={}, allow_anonymous=False)) as server:
        key = new_key(server)
        result, _ = smoke(invoke, server.url, "--key", key)
    assert result.exit_code == 1
    found = checks(result.output)
    assert found["catalog"] == ("pass", "0 routable models")
    assert found["chat"] == ("fail", "no routable chat model in the catalog: name one with --model")
