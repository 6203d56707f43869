"""Admission on the request path (docs/governance.md), through the in-process app and
the real dev upstream: who may call, what they may call, and counters that settle to
the ledger.

Entities are created with the admin API; the plaintext key is the create response's
``value``. Anonymous access is off unless a test turns it on.
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from tests.governance.helpers import (
    CHAT,
    HI,
    MODEL,
    actual_nanos,
    admin,
    assert_counters_match_ledger,
    auth,
    chat,
    chat_body,
    counters,
    create_customer,
    create_key,
    create_team,
    get_entity,
    records,
    running,
    scenario,
    sequential_admits,
    usage_reset,
    usd,
    worst_case_nanos,
)


@pytest.fixture
def settings(make_settings, both_stores):
    return make_settings(allow_anonymous=False, **both_stores)


def error_of(response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code, error
    return str(error["message"])


# --- who may call -------------------------------------------------------------------------


async def test_no_key_is_401(gateway, app):
    response = await gateway.post(CHAT, json=chat_body())
    message = error_of(response, 401, "invalid_api_key")
    assert response.json()["error"]["type"] == "authentication_error"
    assert "Missing virtual key" in message
    assert await records(gateway, app) == []


async def test_a_placeholder_provider_key_is_no_key(gateway):
    response = await chat(gateway, "sk-anything")
    assert "Missing virtual key" in error_of(response, 401, "invalid_api_key")


async def test_unknown_key_is_401(gateway, app):
    await create_key(gateway)
    response = await chat(gateway, "th-" + "x" * 40)
    assert "Invalid virtual key" in error_of(response, 401, "invalid_api_key")
    assert await records(gateway, app) == []


@pytest.mark.parametrize("header", ["authorization", "x-api-key", "x-bf-vk"])
async def test_the_key_is_accepted_from_every_header(gateway, header):
    _, value = await create_key(gateway)
    sent = f"Bearer {value}" if header == "authorization" else value
    response = await gateway.post(CHAT, json=chat_body(), headers={header: sent})
    assert response.status_code == 200, response.text


async def test_inactive_key_is_403(gateway, app):
    key, value = await create_key(gateway, name="off", is_active=False)
    message = error_of(await chat(gateway, value), 403, "key_inactive")
    assert key["id"] in message and "'off'" in message and "inactive" in message
    assert await records(gateway, app) == []


async def test_expired_key_is_403(gateway, app):
    key, value = await create_key(gateway, name="old", expires_at="2001-02-03T04:05:06Z")
    message = error_of(await chat(gateway, value), 403, "key_inactive")
    assert "expired" in message and key["id"] in message
    assert await records(gateway, app) == []


async def test_a_key_stops_working_when_it_expires(gateway):
    soon = datetime.now(UTC) + timedelta(seconds=0.6)
    _, value = await create_key(gateway, expires_at=soon.isoformat())
    assert (await chat(gateway, value)).status_code == 200
    await asyncio.sleep(max((soon - datetime.now(UTC)).total_seconds(), 0) + 0.05)
    error_of(await chat(gateway, value), 403, "key_inactive")


async def test_deactivating_a_key_takes_effect_on_the_next_request(gateway):
    key, value = await create_key(gateway)
    assert (await chat(gateway, value)).status_code == 200
    await admin(gateway, "PUT", f"/virtual-keys/{key['id']}", {"is_active": False})
    error_of(await chat(gateway, value), 403, "key_inactive")


# --- what they may call -------------------------------------------------------------------


async def test_a_model_outside_the_allow_list_is_403(gateway, app):
    key, value = await create_key(gateway, allowed_models=["gpt-4o"])
    response = await chat(gateway, value)
    message = error_of(response, 403, "model_not_allowed")
    assert response.json()["error"]["param"] == "model"
    assert MODEL in message and "gpt-4o" in message and key["id"] in message
    assert await records(gateway, app) == []
    response = await gateway.post(CHAT, json=chat_body(model="gpt-4o"), headers=auth(value))
    assert response.status_code == 200, response.text


async def test_a_provider_outside_the_allow_list_is_403(gateway, app):
    _, value = await create_key(gateway, allowed_providers=["anthropic"])
    message = error_of(await chat(gateway, value), 403, "model_not_allowed")
    assert "anthropic" in message
    body = chat_body(model="claude-haiku-4-5")
    response = await gateway.post(CHAT, json=body, headers=auth(value))
    assert response.status_code == 200, response.text
    (record,) = await records(gateway, app)
    assert record["provider"] == "anthropic"


async def test_models_lists_only_what_the_key_may_use(gateway):
    _, everything = await create_key(gateway, name="all")
    _, narrow = await create_key(gateway, name="narrow", allowed_models=[MODEL])
    _, anthropic = await create_key(gateway, name="claude", allowed_providers=["anthropic"])

    async def listed(value: str) -> list[dict]:
        response = await gateway.get("/v1/models", headers=auth(value))
        assert response.status_code == 200, response.text
        return list(response.json()["data"])

    full = {m["id"] for m in await listed(everything)}
    assert {MODEL, "gpt-4o", "claude-haiku-4-5"} <= full
    narrow_ids = {m["id"] for m in await listed(narrow)}
    assert MODEL in narrow_ids
    assert narrow_ids <= {MODEL, f"openai/{MODEL}"}
    claude = await listed(anthropic)
    assert claude and {m["owned_by"] for m in claude} == {"anthropic"}
    assert MODEL not in {m["id"] for m in claude}


async def test_models_without_a_key_is_401(gateway):
    response = await gateway.get("/v1/models")
    error_of(response, 401, "invalid_api_key")


async def test_anonymous_access_passes_without_a_key_and_without_governance(make_settings):
    async with running(make_settings(allow_anonymous=True)) as (app, client):
        response = await client.post(CHAT, json=chat_body())
        assert response.status_code == 200, response.text
        assert not any(h.startswith("x-ratelimit-") for h in response.headers)
        response = await chat(client, "sk-anything")  # an SDK's placeholder key
        assert response.status_code == 200, response.text
        for record in await records(client, app):
            assert (record["key_id"], record["team_id"], record["customer_id"]) == (None,) * 3
        # A virtual key that is sent is still checked.
        error_of(await chat(client, "th-unknown"), 401, "invalid_api_key")
        _, value = await create_key(client, is_active=False)
        error_of(await chat(client, value), 403, "key_inactive")
        assert len((await client.get("/v1/models")).json()["data"]) > 0


# --- the key's ids land in the record -----------------------------------------------------


async def test_the_record_carries_the_key_team_and_customer(gateway, app):
    customer = await create_customer(gateway)
    team = await create_team(gateway, customer_id=customer["id"])
    key, value = await create_key(gateway, team_id=team["id"])
    direct, direct_value = await create_key(gateway, name="direct", customer_id=customer["id"])
    alone, alone_value = await create_key(gateway, name="alone")
    for v in (value, direct_value, alone_value):
        assert (await chat(gateway, v)).status_code == 200
    by_key = {r["key_id"]: r for r in await records(gateway, app)}
    assert by_key[key["id"]]["team_id"] == team["id"]
    assert by_key[key["id"]]["customer_id"] == customer["id"]
    assert (by_key[direct["id"]]["team_id"], by_key[direct["id"]]["customer_id"]) == (
        None,
        customer["id"],
    )
    assert (by_key[alone["id"]]["team_id"], by_key[alone["id"]]["customer_id"]) == (None, None)


# --- x-ratelimit-* headers ----------------------------------------------------------------

RESET = re.compile(r"^(\d+h)?(\d+m)?\d+s$|^\d+ms$")


async def test_success_carries_the_rate_limit_headers(gateway):
    rate = {
        "request_max_limit": 10,
        "request_reset_duration": "1h",
        "token_max_limit": 100_000,
        "token_reset_duration": "1m",
    }
    _, value = await create_key(gateway, rate_limit=rate)
    first = await chat(gateway, value)
    assert first.status_code == 200, first.text
    h = first.headers
    assert h["x-ratelimit-limit-requests"] == "10"
    assert h["x-ratelimit-remaining-requests"] == "9"
    assert RESET.match(h["x-ratelimit-reset-requests"]) and h[
        "x-ratelimit-reset-requests"
    ].startswith(("59m", "1h"))
    assert h["x-ratelimit-limit-tokens"] == "100000"
    # This request's worst case is held until it settles.
    tokens_bound = 100_000 - int(h["x-ratelimit-remaining-tokens"])
    assert tokens_bound >= 20
    assert RESET.match(h["x-ratelimit-reset-tokens"])
    second = await chat(gateway, value)
    assert second.headers["x-ratelimit-remaining-requests"] == "8"
    usage = first.json()["usage"]["total_tokens"]
    assert int(second.headers["x-ratelimit-remaining-tokens"]) == 100_000 - usage - tokens_bound


async def test_headers_show_the_tightest_scope(gateway):
    team = await create_team(
        gateway, rate_limit={"request_max_limit": 3, "request_reset_duration": "1h"}
    )
    rate = {"request_max_limit": 100, "request_reset_duration": "1h"}
    _, value = await create_key(gateway, team_id=team["id"], rate_limit=rate)
    response = await chat(gateway, value)
    assert response.headers["x-ratelimit-limit-requests"] == "3"
    assert response.headers["x-ratelimit-remaining-requests"] == "2"
    assert "x-ratelimit-limit-tokens" not in response.headers


async def test_a_key_without_limits_sends_no_rate_limit_headers(gateway):
    _, value = await create_key(gateway)
    response = await chat(gateway, value)
    assert response.status_code == 200
    assert not any(name.startswith("x-ratelimit-") for name in response.headers)


# --- settle: counters equal the ledger ----------------------------------------------------

BUDGET = {"max_limit": Decimal(1), "reset_duration": "1h"}
RATE = {
    "request_max_limit": 1000,
    "request_reset_duration": "1h",
    "token_max_limit": 10**9,
    "token_reset_duration": "1d",
}


async def limited_chain(client):
    customer = await create_customer(client, budget=BUDGET, rate_limit=RATE)
    team = await create_team(client, customer_id=customer["id"], budget=BUDGET, rate_limit=RATE)
    key, value = await create_key(client, team_id=team["id"], budget=BUDGET, rate_limit=RATE)
    return customer, team, key, value


async def assert_whole_chain_matches(client, app, customer, team, key) -> None:
    await assert_counters_match_ledger(client, app, "virtual-keys", key["id"])
    await assert_counters_match_ledger(client, app, "teams", team["id"])
    await assert_counters_match_ledger(client, app, "customers", customer["id"])


async def test_settled_counters_equal_the_ledger_on_every_scope(gateway, app):
    customer, team, key, value = await limited_chain(gateway)
    for max_tokens in (1, 3, 16, 50, 7):
        response = await chat(gateway, value, max_tokens=max_tokens)
        assert response.status_code == 200, response.text
    body = {"model": "claude-haiku-4-5", "messages": HI, "max_tokens": 5}
    assert (await gateway.post("/v1/messages", json=body, headers=auth(value))).status_code == 200
    embed = {"model": "text-embedding-3-small", "input": ["a", "bb"]}
    assert (
        await gateway.post("/v1/embeddings", json=embed, headers=auth(value))
    ).status_code == 200
    rows = await assert_counters_match_ledger(gateway, app, "virtual-keys", key["id"])
    assert len(rows) == 7
    assert sum(Decimal(r["cost"]) for r in rows) > 0
    await assert_whole_chain_matches(gateway, app, customer, team, key)
    spent = await get_entity(gateway, "virtual-keys", key["id"])
    assert spent["budget"]["current_usage"] == sum(Decimal(r["cost"]) for r in rows)


async def test_a_failed_upstream_request_releases_the_reservation(gateway, app, upstream):
    customer, team, key, value = await limited_chain(gateway)
    assert (await chat(gateway, value)).status_code == 200
    scenario(upstream, fail_status=500, count=10)  # every retry fails too
    response = await chat(gateway, value)
    assert response.status_code == 502, response.text
    rows = await records(gateway, app, key_id=key["id"])
    failed = [r for r in rows if r["status"] == "error"]
    assert len(failed) == 1 and Decimal(failed[0]["cost"]) == 0
    assert failed[0]["prompt_tokens"] == failed[0]["completion_tokens"] == 0
    # Nothing was spent on it, but it was a request: it counts against the request limit,
    # and the counters rebuilt from the ledger after a restart count it the same way.
    entity = await get_entity(gateway, "virtual-keys", key["id"])
    assert entity["budget"]["current_usage"] == usd(actual_nanos())
    assert entity["rate_limit"]["request_current_usage"] == 2
    await assert_whole_chain_matches(gateway, app, customer, team, key)


async def test_a_streamed_request_is_charged_from_its_usage(gateway, app):
    customer, team, key, value = await limited_chain(gateway)
    response = await chat(gateway, value, stream=True, max_tokens=5)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["x-ratelimit-limit-requests"] == "1000"
    (row,) = await assert_counters_match_ledger(gateway, app, "virtual-keys", key["id"])
    assert row["completion_tokens"] == 5 and Decimal(row["cost"]) == usd(actual_nanos(5))
    await assert_whole_chain_matches(gateway, app, customer, team, key)


async def test_a_stream_cut_short_is_charged_what_was_streamed(gateway, app, upstream):
    customer, team, key, value = await limited_chain(gateway)
    scenario(upstream, disconnect_after_chunks=3)
    response = await chat(gateway, value, stream=True, max_tokens=10)
    assert response.status_code == 200
    assert '"error"' in response.text and "[DONE]" not in response.text
    (row,) = await assert_counters_match_ledger(gateway, app, "virtual-keys", key["id"])
    assert row["status"] == "error" and row["streamed"] is True
    assert Decimal(row["cost"]) > 0
    await assert_whole_chain_matches(gateway, app, customer, team, key)


async def test_a_stream_cut_short_costs_no_more_than_was_reserved(gateway, app, upstream):
    """Committed spend never exceeds the limit (docs/governance.md, *Reserve*). A cut
    stream without provider usage is charged by the bytes streamed; that must stay within
    the output bound the request reserved (``max_tokens``), or a budget sized for one
    request is overspent."""
    limit = worst_case_nanos(max_tokens=4)
    key, value = await create_key(gateway, budget={"max_limit": usd(limit), "reset_duration": "1h"})
    scenario(upstream, disconnect_after_chunks=4)
    response = await chat(gateway, value, stream=True, max_tokens=4)
    assert response.status_code == 200
    (row,) = await records(gateway, app, key_id=key["id"])
    spent = (await get_entity(gateway, "virtual-keys", key["id"]))["budget"]["current_usage"]
    assert spent == Decimal(row["cost"])
    assert spent <= usd(limit), f"{spent} USD committed on a {usd(limit)} USD budget"
    assert row["completion_tokens"] <= 4


# --- refusals spend nothing ---------------------------------------------------------------


async def test_a_refused_request_holds_nothing_and_is_recorded_at_no_cost(gateway, app):
    budget = {"max_limit": usd(worst_case_nanos() - 1), "reset_duration": "1h"}
    key, value = await create_key(gateway, budget=budget, rate_limit=RATE)
    for _ in range(3):
        error_of(await chat(gateway, value), 402, "budget_exceeded")
    assert await records(gateway, app) == []
    # The log shows each refusal: whose, what, why, and that it cost nothing.
    refusals = await records(gateway, app, refused=True)
    assert len(refusals) == 3
    for r in refusals:
        assert (r["status"], r["http_status"], r["key_id"]) == ("refused", 402, key["id"])
        assert r["cost"] == 0 and r["prompt_tokens"] == r["completion_tokens"] == 0
        assert r["error"].startswith("budget_exceeded: "), r["error"]
        assert r["provider"] == "" and r["model"] == "gpt-4o-mini"
    entity = await get_entity(gateway, "virtual-keys", key["id"])
    assert entity["budget"]["current_usage"] == 0
    assert entity["rate_limit"]["request_current_usage"] == 0
    assert all(Decimal(str(c["reserved"])) == 0 for c in await counters(gateway))
    # The same request fits once the estimate is small enough.
    assert (await chat(gateway, value, max_tokens=1)).status_code == 200


async def test_hard_limit_ratio_lets_spend_reach_the_grace_and_no_further(gateway, app):
    budget = {"max_limit": Decimal("0.0001"), "reset_duration": "1h", "hard_limit_ratio": 1.1}
    key, value = await create_key(gateway, budget=budget)
    admitted = sequential_admits(110_000)  # 0.00011 USD in nanos
    assert admitted > sequential_admits(100_000)  # the grace admits more
    statuses = [(await chat(gateway, value)).status_code for _ in range(admitted + 2)]
    assert statuses == [200] * admitted + [402] * 2
    rows = await assert_counters_match_ledger(gateway, app, "virtual-keys", key["id"])
    spent = sum(Decimal(r["cost"]) for r in rows)
    assert Decimal("0.0001") < spent <= Decimal("0.00011")


# --- usage-reset, restart, window roll ----------------------------------------------------


async def test_usage_reset_lets_the_next_request_pass(gateway, app):
    budget = {"max_limit": usd(worst_case_nanos()), "reset_duration": "1d"}
    rate = {"request_max_limit": 2, "request_reset_duration": "1d"}
    key, value = await create_key(gateway, budget=budget)
    limited, limited_value = await create_key(gateway, name="r", rate_limit=rate)
    assert (await chat(gateway, value)).status_code == 200
    error_of(await chat(gateway, value), 402, "budget_exceeded")
    for _ in range(2):
        assert (await chat(gateway, limited_value)).status_code == 200
    error_of(await chat(gateway, limited_value), 429, "rate_limit_exceeded")

    await usage_reset(gateway, virtual_key_id=key["id"])
    await usage_reset(gateway, virtual_key_id=limited["id"])
    entity = await get_entity(gateway, "virtual-keys", key["id"])
    assert entity["budget"]["current_usage"] == 0
    assert (await chat(gateway, value)).status_code == 200
    error_of(await chat(gateway, value), 402, "budget_exceeded")
    assert (await chat(gateway, limited_value)).status_code == 200
    # The ledger keeps every record; counters follow the window the reset started.
    assert len(await records(gateway, app, key_id=key["id"])) == 2


async def test_usage_reset_of_a_team_frees_its_keys(gateway):
    team = await create_team(
        gateway, rate_limit={"request_max_limit": 1, "request_reset_duration": "1d"}
    )
    _, value = await create_key(gateway, team_id=team["id"])
    assert (await chat(gateway, value)).status_code == 200
    message = error_of(await chat(gateway, value), 429, "rate_limit_exceeded")
    assert f"team 'search' ({team['id']})" in message
    await usage_reset(gateway, team_id=team["id"])
    assert (await chat(gateway, value)).status_code == 200


async def test_an_exhausted_budget_stays_exhausted_after_a_restart(make_settings):
    settings = make_settings(allow_anonymous=False)
    budget = {"max_limit": Decimal("0.00005"), "reset_duration": "1d"}
    rate = {"request_max_limit": 100, "request_reset_duration": "1d"}
    async with running(settings) as (app, client):
        key, value = await create_key(client, budget=budget, rate_limit=rate)
        admitted = sequential_admits(50_000)  # 0.00005 USD in nanos
        statuses = [(await chat(client, value)).status_code for _ in range(admitted + 2)]
        assert statuses == [200] * admitted + [402] * 2
        before = await get_entity(client, "virtual-keys", key["id"])
    async with running(settings) as (app, client):
        # Before any request: the admin view already shows what the ledger holds.
        rows = await assert_counters_match_ledger(client, app, "virtual-keys", key["id"])
        assert len(rows) == admitted
        error_of(await chat(client, value), 402, "budget_exceeded")
        await assert_counters_match_ledger(client, app, "virtual-keys", key["id"])
        after = await get_entity(client, "virtual-keys", key["id"])
        assert after["budget"]["current_usage"] == before["budget"]["current_usage"]
        assert after["budget"]["current_usage"] == usd(admitted * actual_nanos())
        assert after["rate_limit"]["request_current_usage"] == admitted


async def test_a_rolling_budget_window_lets_requests_through_again(gateway):
    budget = {"max_limit": usd(worst_case_nanos()), "reset_duration": "1s"}
    key, value = await create_key(gateway, budget=budget)
    anchor = datetime.fromisoformat(key["budget"]["last_reset"])

    async def start_of_next_window() -> None:
        elapsed = (datetime.now(UTC) - anchor).total_seconds()
        await asyncio.sleep(1 - elapsed % 1 + 0.02)

    await start_of_next_window()
    assert (await chat(gateway, value)).status_code == 200
    error_of(await chat(gateway, value), 402, "budget_exceeded")
    await start_of_next_window()
    assert (await chat(gateway, value)).status_code == 200


async def test_raising_the_budget_lets_the_next_request_pass(gateway, app):
    budget = {"max_limit": usd(worst_case_nanos()), "reset_duration": "1d"}
    key, value = await create_key(gateway, budget=budget)
    assert (await chat(gateway, value)).status_code == 200
    error_of(await chat(gateway, value), 402, "budget_exceeded")
    await admin(gateway, "PUT", f"/virtual-keys/{key['id']}", {"budget": {"max_limit": 1}})
    assert (await chat(gateway, value)).status_code == 200
    rows = await assert_counters_match_ledger(gateway, app, "virtual-keys", key["id"])
    assert len(rows) == 2


async def test_lowering_the_budget_refuses_the_next_request(gateway):
    key, value = await create_key(gateway, budget={"max_limit": 1, "reset_duration": "1d"})
    assert (await chat(gateway, value)).status_code == 200
    small = {"budget": {"max_limit": usd(actual_nanos() + worst_case_nanos() - 1)}}
    await admin(gateway, "PUT", f"/virtual-keys/{key['id']}", small)
    message = error_of(await chat(gateway, value), 402, "budget_exceeded")
    assert f"{usd(worst_case_nanos() - 1).normalize()} USD left" in message


async def test_a_calendar_month_budget_ends_on_the_local_first_of_next_month(gateway):
    budget = {
        "max_limit": 1,
        "reset_duration": "1M",
        "calendar_aligned": True,
        "timezone": "Europe/Paris",
    }
    key, value = await create_key(gateway, budget=budget)
    assert (await chat(gateway, value)).status_code == 200
    (counter,) = [c for c in await counters(gateway) if c["kind"] == "budget"]
    paris = ZoneInfo("Europe/Paris")
    start = datetime.fromisoformat(counter["window_start"])
    end = datetime.fromisoformat(counter["window_end"]).astimezone(paris)
    # Created mid-month: the creation (the anchor) starts the rest of this month afresh.
    assert start == datetime.fromisoformat(key["budget"]["last_reset"])
    now = datetime.now(paris)
    following = (now.year + now.month // 12, now.month % 12 + 1)
    assert (end.year, end.month, end.day, end.hour, end.minute) == (*following, 1, 0, 0)
    assert Decimal(counter["committed"]) == usd(actual_nanos())


async def test_a_budget_added_while_a_request_is_in_flight_still_matches_the_ledger(
    gateway, app, upstream
):
    team = await create_team(gateway)
    _, value = await create_key(gateway, team_id=team["id"])
    scenario(upstream, latency_ms=400)
    slow = asyncio.create_task(chat(gateway, value))
    await asyncio.sleep(0.1)  # admitted, waiting on the upstream
    budget = {"budget": {"max_limit": 1, "reset_duration": "1d"}}
    await admin(gateway, "PUT", f"/teams/{team['id']}", budget)
    assert (await slow).status_code == 200
    assert (await chat(gateway, value)).status_code == 200
    # Both records fall in the new budget's window: the counter must hold both.
    await assert_counters_match_ledger(gateway, app, "teams", team["id"])
