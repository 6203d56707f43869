"""Every admission refusal (docs/governance.md, *How a refusal reads*) as the official
SDKs and raw HTTP see it.

Against a live Tollhouse (uvicorn on loopback): the ``openai`` SDK on
``/v1/chat/completions`` and the ``anthropic`` SDK on ``/v1/messages`` raise the class a
user would catch, plain and streaming; a refused stream is a plain JSON error before any
SSE byte; the message names the scope that refused (key, team or customer, with its
name and id) and what is left; 429s carry ``Retry-After`` and the ``x-ratelimit-*``
headers. Refusals leave no usage record and never reach the provider.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import anthropic
import httpx
import openai
import pytest
from tests.governance.helpers import (
    HI,
    MODEL,
    create_customer,
    create_key,
    create_team,
    usd,
    worst_case_nanos,
)
from tests.support import LiveServer, scenario, upstream_stats

CLAUDE = "claude-haiku-4-5"
TINY = {"max_limit": Decimal("0.000001"), "reset_duration": "1d"}  # below any worst case
ONE_REQUEST = {"request_max_limit": 1, "request_reset_duration": "1h"}


@pytest.fixture
def settings(make_settings):
    return make_settings(allow_anonymous=False)


@pytest.fixture
async def admin_client(live_gateway: LiveServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live_gateway.url) as client:
        yield client


@dataclass
class Case:
    """A refusal: how to set it up, and how it must read."""

    status: int
    code: str
    openai_class: type[openai.APIStatusError]
    anthropic_class: type[anthropic.APIStatusError]
    anthropic_type: str
    says: tuple[str, ...] = ()  # fragments the message must contain
    value: str = ""  # the key to send
    scope_id: str = ""


Setup = Callable[[httpx.AsyncClient, LiveServer], Awaitable[Case]]


async def _missing(client: httpx.AsyncClient, live: LiveServer) -> Case:
    # SDKs insist on an API key: a provider-style placeholder counts as no virtual key.
    return Case(
        401,
        "invalid_api_key",
        openai.AuthenticationError,
        anthropic.AuthenticationError,
        "authentication_error",
        ("Missing virtual key",),
        value="sk-placeholder",
    )


async def _unknown(client: httpx.AsyncClient, live: LiveServer) -> Case:
    await create_key(client)
    return Case(
        401,
        "invalid_api_key",
        openai.AuthenticationError,
        anthropic.AuthenticationError,
        "authentication_error",
        ("Invalid virtual key",),
        value="th-" + "0" * 40,
    )


def _forbidden(code: str, *says: str) -> Case:
    return Case(
        403,
        code,
        openai.PermissionDeniedError,
        anthropic.PermissionDeniedError,
        "permission_error",
        says,
    )


async def _inactive(client: httpx.AsyncClient, live: LiveServer) -> Case:
    key, value = await create_key(client, name="paused", is_active=False)
    case = _forbidden("key_inactive", "'paused'", key["id"], "inactive")
    case.value = value
    return case


async def _expired(client: httpx.AsyncClient, live: LiveServer) -> Case:
    key, value = await create_key(client, name="old", expires_at="2020-01-01T00:00:00Z")
    case = _forbidden("key_inactive", "'old'", key["id"], "expired")
    case.value = value
    return case


async def _model(client: httpx.AsyncClient, live: LiveServer) -> Case:
    key, value = await create_key(client, name="narrow", allowed_models=["o4-mini"])
    case = _forbidden("model_not_allowed", "'narrow'", key["id"], "o4-mini", "not allowed")
    case.value = value
    return case


async def _provider(client: httpx.AsyncClient, live: LiveServer) -> Case:
    key, value = await create_key(client, name="elsewhere", allowed_providers=["openrouter"])
    case = _forbidden("model_not_allowed", "'elsewhere'", key["id"], "openrouter")
    case.value = value
    return case


def _payment(scope: str, name: str, scope_id: str, value: str) -> Case:
    return Case(
        402,
        "budget_exceeded",
        openai.APIStatusError,
        anthropic.APIStatusError,
        "billing_error",
        (f"{scope} '{name}' ({scope_id})", "0.000001 USD left of 0.000001 USD", "may cost up to"),
        value=value,
    )


async def _key_budget(client: httpx.AsyncClient, live: LiveServer) -> Case:
    key, value = await create_key(client, name="thrifty", budget=TINY)
    return _payment("key", "thrifty", key["id"], value)


async def _team_budget(client: httpx.AsyncClient, live: LiveServer) -> Case:
    team = await create_team(client, name="frugal", budget=TINY)
    _, value = await create_key(client, team_id=team["id"])
    return _payment("team", "frugal", team["id"], value)


async def _customer_budget(client: httpx.AsyncClient, live: LiveServer) -> Case:
    customer = await create_customer(client, name="prepaid", budget=TINY)
    team = await create_team(client, customer_id=customer["id"])
    _, value = await create_key(
        client, team_id=team["id"], budget={"max_limit": 100, "reset_duration": "1d"}
    )
    return _payment("customer", "prepaid", customer["id"], value)


def _limited(code: str, *says: str) -> Case:
    return Case(
        429, code, openai.RateLimitError, anthropic.RateLimitError, "rate_limit_error", says
    )


async def _requests(client: httpx.AsyncClient, live: LiveServer) -> Case:
    team = await create_team(client, name="chatty", rate_limit=ONE_REQUEST)
    _, value = await create_key(client, team_id=team["id"])
    response = await client.post(
        "/v1/chat/completions",
        json={"model": MODEL, "messages": HI, "max_tokens": 2},
        headers={"authorization": f"Bearer {value}"},
    )
    assert response.status_code == 200, response.text  # the one request of the hour
    case = _limited("rate_limit_exceeded", f"team 'chatty' ({team['id']})", "1 of 1 requests")
    case.value = value
    return case


async def _tokens(client: httpx.AsyncClient, live: LiveServer) -> Case:
    rate = {"token_max_limit": 20, "token_reset_duration": "1m"}
    key, value = await create_key(client, name="wordy", rate_limit=rate)
    case = _limited("rate_limit_exceeded", f"key 'wordy' ({key['id']})", "0 of 20 tokens", "needs")
    case.value = value
    return case


REFUSALS: dict[str, Setup] = {
    "missing-key": _missing,
    "unknown-key": _unknown,
    "inactive-key": _inactive,
    "expired-key": _expired,
    "model-not-allowed": _model,
    "provider-not-allowed": _provider,
    "key-budget": _key_budget,
    "team-budget": _team_budget,
    "customer-budget": _customer_budget,
    "request-limit": _requests,
    "token-limit": _tokens,
}


def check_openai(exc: openai.APIStatusError, case: Case) -> None:
    assert type(exc) is case.openai_class, type(exc)
    assert exc.status_code == case.status
    assert exc.code == case.code
    body: Any = exc.body
    assert set(body) == {"message", "type", "param", "code"}
    for fragment in case.says:
        assert fragment in body["message"], (fragment, body["message"])
    assert exc.response.headers["content-type"].startswith("application/json")
    assert exc.response.headers.get("x-request-id")
    check_rate_headers(exc.response.headers, case)


def check_anthropic(exc: anthropic.APIStatusError, case: Case) -> None:
    assert isinstance(exc, case.anthropic_class), type(exc)
    assert exc.status_code == case.status
    body: Any = exc.body
    assert body["type"] == "error"
    assert body["error"]["type"] == case.anthropic_type
    for fragment in case.says:
        assert fragment in body["error"]["message"], (fragment, body["error"]["message"])
    check_rate_headers(exc.response.headers, case)


def check_rate_headers(headers: Any, case: Case) -> None:
    if case.status != 429:
        return
    assert int(headers["retry-after"]) >= 1
    kind = "tokens" if "tokens" in " ".join(case.says) else "requests"
    for name in ("limit", "remaining", "reset"):
        assert headers[f"x-ratelimit-{name}-{kind}"], name
    assert headers[f"x-ratelimit-remaining-{kind}"] == "0" or kind == "tokens"


async def assert_raw_json_refusal(live: LiveServer, path: str, body: dict, case: Case) -> None:
    """A refused stream: the status and a JSON error, before any SSE byte."""
    headers = {"authorization": f"Bearer {case.value}", "x-api-key": case.value}
    async with (
        httpx.AsyncClient(base_url=live.url) as client,
        client.stream("POST", path, json={**body, "stream": True}, headers=headers) as response,
    ):
        raw = await response.aread()
    assert response.status_code == case.status
    assert response.headers["content-type"].startswith("application/json")
    assert raw.lstrip().startswith(b"{")
    assert b"data:" not in raw and b"event:" not in raw


async def openai_refusals(live: LiveServer, case: Case) -> None:
    async with openai.AsyncOpenAI(
        base_url=f"{live.url}/v1", api_key=case.value, max_retries=0
    ) as client:
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(model=MODEL, messages=HI, max_tokens=16)
        check_openai(caught.value, case)

        with pytest.raises(openai.APIStatusError) as caught:
            stream = await client.chat.completions.create(
                model=MODEL, messages=HI, max_tokens=16, stream=True
            )
            async for _ in stream:
                pytest.fail("a refused stream sent an event")
        check_openai(caught.value, case)
    body = {"model": MODEL, "messages": HI, "max_tokens": 16}
    await assert_raw_json_refusal(live, "/v1/chat/completions", body, case)


async def anthropic_refusals(live: LiveServer, case: Case) -> None:
    async with anthropic.AsyncAnthropic(
        base_url=live.url, api_key=case.value, max_retries=0
    ) as client:
        with pytest.raises(anthropic.APIStatusError) as caught:
            await client.messages.create(model=CLAUDE, max_tokens=16, messages=HI)
        check_anthropic(caught.value, case)

        with pytest.raises(anthropic.APIStatusError) as caught:
            async with client.messages.stream(model=CLAUDE, max_tokens=16, messages=HI) as stream:
                async for _ in stream.text_stream:
                    pytest.fail("a refused stream sent an event")
        check_anthropic(caught.value, case)
    body = {"model": CLAUDE, "messages": HI, "max_tokens": 16}
    await assert_raw_json_refusal(live, "/v1/messages", body, case)


@pytest.mark.parametrize("refusal", list(REFUSALS))
async def test_refusal_reads_right_in_both_sdks_and_raw_http(
    refusal: str, live_gateway: LiveServer, admin_client: httpx.AsyncClient, upstream: Any
) -> None:
    case = await REFUSALS[refusal](admin_client, live_gateway)
    before = upstream_stats(upstream)["inference_requests"]
    records_before = len(live_gateway.usage())

    await openai_refusals(live_gateway, case)
    await anthropic_refusals(live_gateway, case)

    # Nothing reached the provider and nothing was recorded.
    assert upstream_stats(upstream)["inference_requests"] == before
    assert len(live_gateway.usage()) == records_before


# --- the concurrency cap ------------------------------------------------------------------


@contextlib.asynccontextmanager
async def one_request_in_flight(live: LiveServer, upstream: Any, value: str) -> AsyncIterator[None]:
    """Holds one slow request open at the upstream for the duration of the block."""
    scenario(upstream, latency_ms=1500)
    async with httpx.AsyncClient(base_url=live.url, timeout=10) as client:
        held = asyncio.create_task(
            client.post(
                "/v1/chat/completions",
                json={"model": MODEL, "messages": HI, "max_tokens": 2},
                headers={"authorization": f"Bearer {value}"},
            )
        )
        for _ in range(200):
            if upstream_stats(upstream)["in_flight"] == 1:
                break
            await asyncio.sleep(0.01)
        try:
            yield
        finally:
            assert (await held).status_code == 200


async def test_the_parallel_cap_is_a_rate_limit_error_in_both_sdks(
    live_gateway: LiveServer, admin_client: httpx.AsyncClient, upstream: Any
) -> None:
    key, value = await create_key(admin_client, name="single", max_parallel_requests=1)
    case = _limited("parallel_limit_exceeded", f"key 'single' ({key['id']})", "1 of 1")
    case.value = value
    async with one_request_in_flight(live_gateway, upstream, value):
        async with openai.AsyncOpenAI(
            base_url=f"{live_gateway.url}/v1", api_key=value, max_retries=0
        ) as client:
            with pytest.raises(openai.RateLimitError) as caught:
                await client.chat.completions.create(model=MODEL, messages=HI, max_tokens=4)
            assert caught.value.code == "parallel_limit_exceeded"
            assert caught.value.response.headers["retry-after"] == "1"
            for fragment in case.says:
                assert fragment in caught.value.message
        async with anthropic.AsyncAnthropic(
            base_url=live_gateway.url, api_key=value, max_retries=0
        ) as aclient:
            with pytest.raises(anthropic.RateLimitError):
                await aclient.messages.create(model=CLAUDE, max_tokens=4, messages=HI)
        body = {"model": MODEL, "messages": HI, "max_tokens": 4}
        case.status = 429
        await assert_raw_json_refusal(live_gateway, "/v1/chat/completions", body, case)
        assert upstream_stats(upstream)["in_flight"] == 1


# --- which check refuses first ------------------------------------------------------------


async def test_rate_limits_are_checked_before_budgets(
    live_gateway: LiveServer, admin_client: httpx.AsyncClient
) -> None:
    # Room for exactly one request on both counts: afterwards both refuse.
    budget = {"max_limit": usd(worst_case_nanos()), "reset_duration": "1d"}
    team = await create_team(admin_client, name="strict", budget=budget)
    _, value = await create_key(admin_client, team_id=team["id"], rate_limit=ONE_REQUEST)
    async with openai.AsyncOpenAI(
        base_url=f"{live_gateway.url}/v1", api_key=value, max_retries=0
    ) as client:
        await client.chat.completions.create(model=MODEL, messages=HI, max_tokens=16)
        with pytest.raises(openai.RateLimitError) as caught:
            await client.chat.completions.create(model=MODEL, messages=HI, max_tokens=16)
        assert "key 'k'" in caught.value.message
        assert "Request rate limit" in caught.value.message


async def test_a_refusal_names_the_first_scope_that_cannot_pay(
    live_gateway: LiveServer, admin_client: httpx.AsyncClient
) -> None:
    """Key, then team, then customer: the message names the first that refuses."""
    customer = await create_customer(admin_client, name="c", budget=TINY)
    team = await create_team(admin_client, name="t", customer_id=customer["id"], budget=TINY)
    key, value = await create_key(admin_client, name="k", team_id=team["id"], budget=TINY)
    async with openai.AsyncOpenAI(
        base_url=f"{live_gateway.url}/v1", api_key=value, max_retries=0
    ) as client:
        with pytest.raises(openai.APIStatusError) as caught:
            await client.chat.completions.create(model=MODEL, messages=HI, max_tokens=1)
    assert f"key 'k' ({key['id']})" in caught.value.message
