"""Prepaid credits on the request path: an account without credit refuses before the
upstream is called (402 ``insufficient_credits``, with what is available and what the
request may cost); a grant restores service; every request's actual cost is posted to
the journal in the transaction that writes its usage record; the nearest account in
the key → team → customer chain pays, and only it."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from tests.credits.helpers import balance, call, entries, grant, open_account
from tests.governance.helpers import (
    actual_nanos,
    chat,
    chat_body,
    create_customer,
    create_key,
    create_team,
    records,
    usd,
    worst_case_nanos,
)
from tests.support import decode, reached, running

pytestmark = pytest.mark.usefixtures("upstream")


@pytest.fixture
def settings(make_settings):
    return make_settings(allow_anonymous=False)


async def test_an_account_without_credit_refuses_before_the_upstream(gateway, upstream):
    customer = await create_customer(gateway)
    _, value = await create_key(gateway, customer_id=customer["id"])
    account = await open_account(gateway, "customer", customer["id"])
    before = reached(upstream)

    response = await chat(gateway, value)

    assert response.status_code == 402
    error = decode(response)["error"]
    assert error["code"] == "insufficient_credits"
    assert error["type"] == "insufficient_quota"
    cost = usd(worst_case_nanos())
    assert "0 USD available" in error["message"]
    assert f"may cost up to {cost} USD" in error["message"]
    assert account["id"] in error["message"]
    assert reached(upstream) == before
    assert await balance(gateway, account["id"]) == {
        "total": 0,
        "reserved": 0,
        "available": 0,
    }


async def test_a_grant_restores_service_and_usage_is_posted_exactly(gateway, app):
    customer = await create_customer(gateway)
    key, value = await create_key(gateway, customer_id=customer["id"])
    account = await open_account(gateway, "customer", customer["id"])
    assert (await chat(gateway, value)).status_code == 402

    lot = await grant(gateway, account["id"], "0.001", category="promotional")
    assert lot["status"] == "active" and lot["remaining"] == Decimal("0.001")

    assert (await chat(gateway, value)).status_code == 200
    assert (await chat(gateway, value)).status_code == 200
    rows = await records(gateway, app, key_id=key["id"])
    assert [r["credit_account_id"] for r in rows] == [account["id"]] * 2
    spent = sum((r["cost"] for r in rows), Decimal(0))
    assert spent == 2 * usd(actual_nanos())

    assert await balance(gateway, account["id"]) == {
        "total": Decimal("0.001") - spent,
        "reserved": 0,
        "available": Decimal("0.001") - spent,
    }
    journal = await entries(gateway, account["id"])
    posts = [e for e in journal if e["kind"] == "post"]
    assert [e["kind"] for e in journal] == ["post"] * len(posts) + ["grant"]
    # One post per ledger batch; each record names the post that charged it.
    assert {e["key"] for e in posts} == {r["credit_post"] for r in rows}
    assert sum(e["amount"] for e in posts) == -spent
    assert journal[0]["balance_after"] == Decimal("0.001") - spent
    assert journal[-1]["balance_after"] == Decimal("0.001")
    assert journal[-1]["category"] == "promotional"


async def test_credit_runs_out_to_the_last_request_it_can_pay_for(gateway):
    customer = await create_customer(gateway)
    _, value = await create_key(gateway, customer_id=customer["id"])
    account = await open_account(gateway, "customer", customer["id"])
    funding = 3 * worst_case_nanos()
    await grant(gateway, account["id"], str(usd(funding)))
    admitted = 0
    while (await chat(gateway, value)).status_code == 200:
        admitted += 1
        assert admitted < 100
    # Each admission needs the worst case free; each request then costs its actual.
    expected, spent = 0, 0
    while spent + worst_case_nanos() <= funding:
        spent += actual_nanos()
        expected += 1
    assert admitted == expected
    left = await balance(gateway, account["id"])
    assert left["available"] == usd(funding - spent)
    assert left["available"] >= 0


async def test_the_overdraft_limit_lets_available_go_below_zero_but_no_further(gateway):
    customer = await create_customer(gateway)
    _, value = await create_key(gateway, customer_id=customer["id"])
    overdraft = usd(2 * worst_case_nanos())
    account = await open_account(gateway, "customer", customer["id"], overdraft_limit=overdraft)
    admitted = 0
    while (await chat(gateway, value)).status_code == 200:
        admitted += 1
        assert admitted < 100
    assert admitted >= 2
    left = await balance(gateway, account["id"])
    assert -overdraft <= left["available"] < 0
    refusal = decode(await chat(gateway, value))["error"]["message"]
    assert f"overdraft limit {overdraft} USD" in refusal


async def test_the_nearest_account_pays_and_only_it(gateway, app):
    customer = await create_customer(gateway)
    team = await create_team(gateway, customer_id=customer["id"])
    key, value = await create_key(gateway, team_id=team["id"])
    for_customer = await open_account(gateway, "customer", customer["id"])
    for_team = await open_account(gateway, "team", team["id"])
    await grant(gateway, for_customer["id"], "1")
    # The team's account is empty: it pays, so the request is refused.
    assert (await chat(gateway, value)).status_code == 402
    await grant(gateway, for_team["id"], "1")
    assert (await chat(gateway, value)).status_code == 200
    rows = await records(gateway, app, key_id=key["id"])
    assert [r["credit_account_id"] for r in rows] == [for_team["id"]]
    assert (await balance(gateway, for_customer["id"]))["total"] == 1
    assert (await balance(gateway, for_team["id"]))["total"] == 1 - rows[0]["cost"]


async def test_a_key_holder_reads_its_credits_in_openrouters_shape(gateway):
    customer = await create_customer(gateway)
    _, value = await create_key(gateway, customer_id=customer["id"])
    _, other = await create_key(gateway, name="no-account")
    account = await open_account(gateway, "customer", customer["id"])
    await grant(gateway, account["id"], "2.5")
    assert (await chat(gateway, value)).status_code == 200

    response = await gateway.get("/v1/credits", headers={"authorization": f"Bearer {value}"})
    assert response.status_code == 200
    data = decode(response)["data"]
    assert data["total_credits"] == Decimal("2.5")
    assert data["total_usage"] == usd(actual_nanos())
    assert data["available"] == Decimal("2.5") - data["total_usage"]
    assert data["reserved"] == 0

    missing = await gateway.get("/v1/credits", headers={"authorization": f"Bearer {other}"})
    assert missing.status_code == 404
    assert "no credit account" in decode(missing)["error"]["message"]
    unknown = await gateway.get("/v1/credits", headers={"authorization": "Bearer th-nope"})
    assert unknown.status_code == 401


async def test_an_owner_has_one_account_and_owners_must_exist(gateway):
    customer = await create_customer(gateway)
    await open_account(gateway, "customer", customer["id"])
    again = await call(
        gateway,
        "POST",
        "/accounts",
        {"owner_type": "customer", "owner_id": customer["id"]},
        409,
    )
    assert "already has a credit account" in again["error"]
    missing = await call(
        gateway, "POST", "/accounts", {"owner_type": "team", "owner_id": "nope"}, 400
    )
    assert "does not exist" in missing["error"]
    listed = await call(gateway, "GET", "/accounts", params={"owner_id": customer["id"]})
    assert listed["count"] == 1


async def test_a_governed_response_says_what_it_cost(gateway, app):
    customer = await create_customer(gateway)
    key, value = await create_key(gateway, customer_id=customer["id"])
    account = await open_account(gateway, "customer", customer["id"])
    await grant(gateway, account["id"], "1")

    response = await chat(gateway, value)

    assert response.status_code == 200
    cost = (await records(gateway, app, key_id=key["id"]))[0]["cost"]
    assert Decimal(response.headers["x-tollhouse-cost"]) == cost
    assert decode(response)["usage"]["cost"] == cost


async def test_a_governed_stream_says_what_it_cost_in_its_usage_chunk(gateway, app):
    customer = await create_customer(gateway)
    key, value = await create_key(gateway, customer_id=customer["id"])
    account = await open_account(gateway, "customer", customer["id"])
    await grant(gateway, account["id"], "1")

    body = chat_body(stream=True, stream_options={"include_usage": True})
    response = await gateway.post(
        "/v1/chat/completions", json=body, headers={"authorization": f"Bearer {value}"}
    )

    assert response.status_code == 200
    chunks = [
        json.loads(line[6:], parse_float=Decimal)
        for line in response.text.splitlines()
        if line.startswith("data: {")
    ]
    usage = [c["usage"] for c in chunks if c.get("usage")]
    cost = (await records(gateway, app, key_id=key["id"]))[0]["cost"]
    assert usage and usage[-1]["cost"] == cost


async def test_raising_the_overdraft_limit_lets_the_next_request_through_at_once(gateway):
    """The limit is what admission may spend: changing it bumps the account's revision
    and the running gateway applies it before the update is answered."""
    customer = await create_customer(gateway)
    _, value = await create_key(gateway, customer_id=customer["id"])
    account = await open_account(gateway, "customer", customer["id"])
    assert (await chat(gateway, value)).status_code == 402
    path = f"/accounts/{account['id']}"
    overdraft = usd(2 * worst_case_nanos())
    updated = (await call(gateway, "PUT", path, {"overdraft_limit": overdraft}))["account"]
    assert updated["overdraft_limit"] == overdraft
    assert (await chat(gateway, value)).status_code == 200
    # The same limit again changes nothing admission needs to know.
    same = (await call(gateway, "PUT", path, {"overdraft_limit": overdraft}))["account"]
    assert same["overdraft_limit"] == overdraft


async def test_accounts_are_listed_by_owner_type(gateway):
    customer = await create_customer(gateway)
    team = await create_team(gateway, customer_id=customer["id"])
    for_customer = await open_account(gateway, "customer", customer["id"])
    for_team = await open_account(gateway, "team", team["id"])
    everything = await call(gateway, "GET", "/accounts")
    assert [a["id"] for a in everything["accounts"]] == [for_customer["id"], for_team["id"]]
    teams = await call(gateway, "GET", "/accounts", params={"owner_type": "team"})
    assert [a["id"] for a in teams["accounts"]] == [for_team["id"]]
    both = {"owner_type": "customer", "owner_id": team["id"]}
    assert (await call(gateway, "GET", "/accounts", params=both))["count"] == 0


async def test_an_anonymous_caller_has_no_credits_to_read(make_settings):
    async with running(make_settings(allow_anonymous=True)) as (_, client):
        response = await client.get("/v1/credits")
    assert response.status_code == 404
    assert "anonymous requests have no credit account" in decode(response)["error"]["message"]
