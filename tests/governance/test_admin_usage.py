"""``usage-stats``, ``usage-reset`` and the ``debug/*`` views."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import pytest
from tests.governance.helpers import admin, bad_request, cost_sum, create, get_entity
from tests.support import flushed, records

CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


async def spend(gateway, app, key_value: str, times: int = 1) -> None:
    for _ in range(times):
        response = await gateway.post(
            "/v1/chat/completions", json=CHAT, headers={"x-bf-vk": key_value}
        )
        assert response.status_code == 200, response.text
    await flushed(app)


async def metered_key(gateway):
    """A key under a team, both with a budget and a rate limit."""
    limits = {
        "budget": {"max_limit": 100, "reset_duration": "1d"},
        "rate_limit": {
            "token_max_limit": 1000000,
            "token_reset_duration": "1h",
            "request_max_limit": 1000,
            "request_reset_duration": "1h",
        },
    }
    team = await create(gateway, "teams", name="t", **limits)
    key = await create(gateway, "virtual-keys", name="k", team_id=team["id"], **limits)
    return team, key


async def test_usage_stats_of_every_key_and_of_one(gateway, app):
    team, key = await metered_key(gateway)
    bare = await create(gateway, "virtual-keys", name="bare")
    await spend(gateway, app, key["value"], times=2)
    data = await admin(gateway, "GET", "/usage-stats", status=200)
    assert set(data) == {"usage_stats"}
    stats = {s["virtual_key_id"]: s for s in data["usage_stats"]}
    assert set(stats) == {key["id"], bare["id"]}
    mine = stats[key["id"]]
    spent = await records(gateway, app, key_id=key["id"])
    assert mine["name"] == "k"
    assert mine["requests_current_usage"] == 2
    tokens = sum(r["prompt_tokens"] + r["completion_tokens"] for r in spent)
    assert mine["tokens_current_usage"] == tokens > 0
    assert Decimal(mine["budget_current_usage"]) == cost_sum(spent) > 0
    assert mine["budget_max_limit"] == 100
    assert mine["request_max_limit"] == 1000 and mine["token_max_limit"] == 1000000
    datetime.fromisoformat(mine["requests_last_reset"])
    assert stats[bare["id"]]["budget_current_usage"] is None
    assert stats[bare["id"]]["requests_current_usage"] is None

    one = await admin(gateway, "GET", f"/usage-stats?virtual_key_id={key['id']}", status=200)
    assert one == {"virtual_key_id": key["id"], "usage_stats": mine}
    # The entity views show the same counters.
    shown = await get_entity(gateway, "virtual-keys", key["id"])
    assert shown["budget"]["current_usage"] == mine["budget_current_usage"]
    assert shown["rate_limit"]["request_current_usage"] == 2


async def test_usage_stats_of_an_unknown_key_is_404(gateway):
    data = await admin(gateway, "GET", "/usage-stats?virtual_key_id=ghost", status=404)
    assert data["error"] == "Virtual key not found"


async def test_usage_reset_clears_that_entity_only(gateway, app):
    team, key = await metered_key(gateway)
    await spend(gateway, app, key["value"], times=2)
    before_team = await get_entity(gateway, "teams", team["id"])
    assert before_team["budget"]["current_usage"] > 0

    data = await admin(gateway, "POST", "/usage-reset", {"virtual_key_id": key["id"]}, status=200)
    assert data == {"message": "Usage reset successfully"}
    after = await get_entity(gateway, "virtual-keys", key["id"])
    assert after["budget"]["current_usage"] == 0
    assert after["rate_limit"]["request_current_usage"] == 0
    assert after["rate_limit"]["token_current_usage"] == 0
    assert after["budget"]["last_reset"] > key["budget"]["last_reset"]
    after_team = await get_entity(gateway, "teams", team["id"])
    assert after_team["budget"]["current_usage"] == before_team["budget"]["current_usage"]
    assert after_team["budget"]["last_reset"] == before_team["budget"]["last_reset"]

    await admin(gateway, "POST", "/usage-reset", {"team_id": team["id"]}, status=200)
    assert (await get_entity(gateway, "teams", team["id"]))["budget"]["current_usage"] == 0
    # The next request passes and counts from zero.
    await spend(gateway, app, key["value"])
    counted = await admin(gateway, "GET", f"/usage-stats?virtual_key_id={key['id']}", status=200)
    assert counted["usage_stats"]["requests_current_usage"] == 1


async def test_usage_reset_of_a_customer_and_of_an_entity_without_limits(gateway, app):
    budget = {"max_limit": 1, "reset_duration": "1M"}
    customer = await create(gateway, "customers", name="c", budget=budget)
    key = await create(gateway, "virtual-keys", name="k", customer_id=customer["id"])
    await spend(gateway, app, key["value"], times=2)
    spent = cost_sum(await records(gateway, app, customer_id=customer["id"]))
    before = (await get_entity(gateway, "customers", customer["id"]))["budget"]
    assert Decimal(before["current_usage"]) == spent > 0

    reset = {"customer_id": customer["id"]}
    data = await admin(gateway, "POST", "/usage-reset", reset, status=200)
    assert data == {"message": "Usage reset successfully"}
    after = (await get_entity(gateway, "customers", customer["id"]))["budget"]
    assert after["current_usage"] == 0
    assert after["last_reset"] > before["last_reset"]
    await spend(gateway, app, key["value"])  # counts from zero again
    again = (await get_entity(gateway, "customers", customer["id"]))["budget"]
    assert Decimal(again["current_usage"]) == spent / 2

    bare = await create(gateway, "teams", name="bare")
    data = await admin(gateway, "POST", "/usage-reset", {"team_id": bare["id"]}, status=200)
    assert data == {"message": "Usage reset successfully"}
    unchanged = await get_entity(gateway, "teams", bare["id"])
    assert (unchanged["budget"], unchanged["rate_limit"]) == (None, None)
    assert unchanged["updated_at"] == bare["updated_at"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"virtual_key_id": "ghost"}, "Virtual key not found"),
        ({"team_id": "ghost"}, "Team not found"),
        ({"customer_id": "ghost"}, "Customer not found"),
    ],
)
async def test_usage_reset_of_an_unknown_entity_is_404(gateway, body, message):
    data = await admin(gateway, "POST", "/usage-reset", body, status=404)
    assert data == {"error": message, "code": "not_found"}


@pytest.mark.parametrize(
    "body",
    [{}, {"virtual_key_id": None}, {"virtual_key_id": "a", "team_id": "b"}, {"team_id": 5}],
)
async def test_usage_reset_needs_exactly_one_id(gateway, body):
    await bad_request(gateway, "POST", "/usage-reset", body)


async def test_debug_stats(gateway):
    await metered_key(gateway)
    await create(gateway, "customers", name="c")
    data = await admin(gateway, "GET", "/debug/stats", status=200)
    assert set(data) == {"plugin_stats", "database_stats", "timestamp"}
    stats = data["database_stats"]
    assert {k: v for k, v in stats.items() if k != "version"} == {
        "virtual_keys_count": 1,
        "teams_count": 1,
        "customers_count": 1,
        "budgets_count": 2,
        "rate_limits_count": 2,
    }
    assert stats["version"] >= 3
    assert data["plugin_stats"]["loaded"] is True
    datetime.fromisoformat(data["timestamp"])


async def test_debug_counters_show_what_each_scope_committed(gateway, app):
    team, key = await metered_key(gateway)
    await spend(gateway, app, key["value"])
    (record,) = await records(gateway, app)
    data = await admin(gateway, "GET", "/debug/counters", status=200)
    assert set(data) == {"counters", "count", "timestamp"}
    assert data["count"] == len(data["counters"])
    datetime.fromisoformat(data["timestamp"])
    shown = {(c["scope"], c["scope_id"], c["kind"]): c for c in data["counters"]}
    owners = {("key", key["id"]): key, ("team", team["id"]): team}
    assert set(shown) == {(*o, kind) for o in owners for kind in ("budget", "requests", "tokens")}
    tokens = record["prompt_tokens"] + record["completion_tokens"]
    for (scope, scope_id, kind), counter in shown.items():
        limits = owners[(scope, scope_id)]
        if kind == "budget":
            assert counter["id"] == limits["budget_id"]
            assert Decimal(counter["committed"]) == record["cost"] > 0
            assert Decimal(counter["limit"]) == 100 and Decimal(counter["reserved"]) == 0
        else:
            assert counter["id"] == limits["rate_limit_id"]
            assert counter["committed"] == (1 if kind == "requests" else tokens)
            assert counter["reserved"] == 0
        assert counter["window_start"] < counter["window_end"]


async def test_debug_health(gateway):
    data = await admin(gateway, "GET", "/debug/health", status=200)
    assert data["status"] == "healthy"
    assert data["checks"] == {"database": {"status": "healthy"}}
    datetime.fromisoformat(data["timestamp"])


async def test_debug_health_when_the_database_is_gone(gateway, app, make_settings, tmp_path):
    from tollhouse.db import create_engine

    broken = create_engine(
        make_settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/missing/dir/x.db")
    )
    working, app.services.engine = app.services.engine, broken
    try:
        data = await admin(gateway, "GET", "/debug/health", status=503)
    finally:
        app.services.engine = working
        await broken.dispose()
    assert data["status"] == "unhealthy"
    assert data["checks"]["database"]["status"] == "unhealthy"
