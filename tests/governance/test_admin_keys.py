"""``/api/governance/virtual-keys``: create, read, list, merge updates, delete."""

from __future__ import annotations

import asyncio
import re
from datetime import datetime

import pytest
from tests.governance.helpers import (
    admin,
    bad_request,
    counts,
    create,
    get_entity,
    listing,
    update,
    without,
)

HINT = re.compile(r"^th-.{4}….{4}$")


async def make_parents(gateway):
    customer = await create(gateway, "customers", name="acme")
    team = await create(gateway, "teams", name="search", customer_id=customer["id"])
    other = await create(gateway, "teams", name="ads")
    return customer, team, other


async def test_minimal_key(gateway):
    data = await admin(gateway, "POST", "/virtual-keys", {"name": "ci"}, status=201)
    assert data["message"] == "Virtual key created successfully"
    key = data["virtual_key"]
    assert key["name"] == "ci"
    assert key["value"].startswith("th-") and len(key["value"]) == 43
    assert key["is_active"] is True
    assert key["allowed_models"] is None and key["allowed_providers"] is None
    assert key["expires_at"] is None and key["max_parallel_requests"] is None
    for absent in ("description", "team_id", "customer_id", "budget", "rate_limit", "team"):
        assert key[absent] is None
    assert key["created_at"] == key["updated_at"]
    assert datetime.fromisoformat(key["created_at"]).tzinfo is not None


async def test_value_is_shown_once_then_only_its_hint(gateway):
    key = await create(gateway, "virtual-keys", name="once")
    value = key["value"]
    hint = (await get_entity(gateway, "virtual-keys", key["id"]))["value"]
    assert HINT.match(hint) and hint != value
    assert hint.startswith(value[:7]) and hint.endswith(value[-4:])
    (listed,) = await listing(gateway, "virtual-keys")
    assert listed["value"] == hint
    updated = await update(gateway, "virtual-keys", key["id"], {"name": "renamed"})
    assert updated["value"] == hint


async def test_complete_key(gateway):
    _, team, _ = await make_parents(gateway)
    body = {
        "name": "complete",
        "description": "all fields",
        "is_active": False,
        "expires_at": "2031-05-01T12:00:00+02:00",
        "allowed_models": ["gpt-4o-mini", "claude-haiku-4-5"],
        "allowed_providers": ["openai", "anthropic"],
        "max_parallel_requests": 4,
        "team_id": team["id"],
        "budget": {"max_limit": 50000, "reset_duration": "1d"},
        "rate_limit": {
            "token_max_limit": 5000,
            "token_reset_duration": "1h",
            "request_max_limit": 500,
            "request_reset_duration": "1h",
        },
    }
    key = await create(gateway, "virtual-keys", **body)
    assert key["description"] == "all fields"
    assert key["is_active"] is False
    assert key["expires_at"] == "2031-05-01T10:00:00.000000Z"
    assert key["allowed_models"] == body["allowed_models"]
    assert key["allowed_providers"] == body["allowed_providers"]
    assert key["max_parallel_requests"] == 4
    assert key["team_id"] == team["id"] and key["team"]["id"] == team["id"]
    assert key["team"]["customer_id"] == team["customer_id"]
    assert "customer" not in key["team"] and key["team"]["virtual_keys"] is None
    assert key["budget"]["max_limit"] == 50000 and key["budget_id"] == key["budget"]["id"]
    assert key["rate_limit_id"] == key["rate_limit"]["id"]
    limit = key["rate_limit"]
    assert (limit["token_max_limit"], limit["request_max_limit"]) == (5000, 500)
    assert (limit["token_current_usage"], limit["request_current_usage"]) == (0, 0)
    assert without(await get_entity(gateway, "virtual-keys", key["id"]), "value") == without(
        key, "value"
    )


async def test_key_under_a_customer(gateway):
    customer, _, _ = await make_parents(gateway)
    key = await create(gateway, "virtual-keys", name="k", customer_id=customer["id"])
    assert key["customer_id"] == customer["id"]
    assert key["customer"]["name"] == "acme"
    assert key["customer"]["teams"] is None and key["customer"]["virtual_keys"] is None
    assert key["team_id"] is None and key["team"] is None


@pytest.mark.parametrize("team_id", ["a-team", None])
async def test_team_and_customer_together_is_refused_before_any_lookup(gateway, team_id):
    customer, team, _ = await make_parents(gateway)
    body = {"name": "both", "team_id": team_id or team["id"], "customer_id": customer["id"]}
    error = await bad_request(gateway, "POST", "/virtual-keys", body)
    assert error["error"] == "VirtualKey cannot be attached to both Team and Customer"
    key = await create(gateway, "virtual-keys", name="k")
    error = await bad_request(gateway, "PUT", f"/virtual-keys/{key['id']}", body)
    assert "cannot be attached to both" in error["error"].lower()
    # ... even for an unknown key: the body is wrong whatever the id.
    await bad_request(gateway, "PUT", "/virtual-keys/nope", body)


@pytest.mark.parametrize("field", ["team_id", "customer_id"])
async def test_unknown_parent_is_a_400_naming_it(gateway, field):
    error = await bad_request(gateway, "POST", "/virtual-keys", {"name": "k", field: "ghost-1"})
    assert "ghost-1" in error["error"] and field in error["error"]
    assert (await counts(gateway))["virtual_keys_count"] == 0
    key = await create(gateway, "virtual-keys", name="k")
    before = await get_entity(gateway, "virtual-keys", key["id"])
    error = await bad_request(gateway, "PUT", f"/virtual-keys/{key['id']}", {field: "ghost-2"})
    assert "ghost-2" in error["error"]
    assert await get_entity(gateway, "virtual-keys", key["id"]) == before


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_unknown_key_is_404(gateway, method):
    body = {} if method == "PUT" else None
    data = await admin(gateway, method, "/virtual-keys/0000-unknown", body, status=404)
    assert data == {"error": "Virtual key not found", "code": "not_found"}


async def test_delete(gateway):
    key = await create(
        gateway,
        "virtual-keys",
        name="gone",
        budget={"max_limit": 1, "reset_duration": "1h"},
        rate_limit={"request_max_limit": 1, "request_reset_duration": "1m"},
    )
    data = await admin(gateway, "DELETE", f"/virtual-keys/{key['id']}", status=200)
    assert data == {"message": "Virtual key deleted successfully"}
    await admin(gateway, "GET", f"/virtual-keys/{key['id']}", status=404)
    await admin(gateway, "DELETE", f"/virtual-keys/{key['id']}", status=404)
    # Its budget and rate limit belonged to it alone.
    assert await counts(gateway) == {
        "virtual_keys_count": 0,
        "teams_count": 0,
        "customers_count": 0,
        "budgets_count": 0,
        "rate_limits_count": 0,
    }


async def test_list_and_filters(gateway):
    customer, team, other = await make_parents(gateway)
    a = await create(gateway, "virtual-keys", name="a", team_id=team["id"])
    b = await create(gateway, "virtual-keys", name="b", team_id=other["id"])
    c = await create(gateway, "virtual-keys", name="c", customer_id=customer["id"])
    d = await create(gateway, "virtual-keys", name="d")
    assert [k["id"] for k in await listing(gateway, "virtual-keys")] == [
        k["id"] for k in (a, b, c, d)
    ]
    assert [k["name"] for k in await listing(gateway, "virtual-keys", team_id=team["id"])] == ["a"]
    only_c = await listing(gateway, "virtual-keys", customer_id=customer["id"])
    assert [k["name"] for k in only_c] == ["c"]
    assert await listing(gateway, "virtual-keys", team_id="unknown") == []


# --- updates --------------------------------------------------------------------------

SINGLE_FIELDS = [
    ("name", "renamed"),
    ("description", "now described"),
    ("is_active", False),
    ("expires_at", "2030-01-01T00:00:00Z"),
    ("allowed_models", ["gpt-4o-mini"]),
    ("allowed_models", []),
    ("allowed_providers", ["openai", "anthropic"]),
    ("max_parallel_requests", 3),
]


@pytest.mark.parametrize(("field", "value"), SINGLE_FIELDS)
async def test_each_field_alone(gateway, field, value):
    original = await get_entity(
        gateway, "virtual-keys", (await create(gateway, "virtual-keys", name="k"))["id"]
    )
    updated = await update(gateway, "virtual-keys", original["id"], {field: value})
    expected = "2030-01-01T00:00:00.000000Z" if field == "expires_at" else value
    assert updated[field] == expected
    assert without(updated, field, "updated_at") == without(original, field, "updated_at")
    assert updated["updated_at"] > original["updated_at"]
    assert await get_entity(gateway, "virtual-keys", original["id"]) == updated


async def test_all_fields_together(gateway):
    _, team, _ = await make_parents(gateway)
    key = await create(gateway, "virtual-keys", name="k")
    body = {
        "name": "all",
        "description": "d",
        "is_active": False,
        "expires_at": "2030-01-01T00:00:00Z",
        "allowed_models": ["m"],
        "allowed_providers": ["openai"],
        "max_parallel_requests": 2,
        "team_id": team["id"],
        "budget": {"max_limit": 50000, "reset_duration": "1d"},
        "rate_limit": {"request_max_limit": 10, "request_reset_duration": "1m"},
    }
    updated = await update(gateway, "virtual-keys", key["id"], body)
    for field in ("name", "description", "is_active", "allowed_models", "allowed_providers",
                  "max_parallel_requests", "team_id"):  # fmt: skip
        assert updated[field] == body[field], field
    assert updated["budget"]["max_limit"] == 50000
    assert updated["rate_limit"]["request_max_limit"] == 10
    assert updated["team"]["id"] == team["id"]


async def test_nulls_clear_what_may_be_empty(gateway):
    _, team, _ = await make_parents(gateway)
    key = await create(
        gateway,
        "virtual-keys",
        name="k",
        description="d",
        expires_at="2030-01-01T00:00:00Z",
        allowed_models=["m"],
        allowed_providers=["p"],
        max_parallel_requests=2,
        team_id=team["id"],
        budget={"max_limit": 1, "reset_duration": "1h"},
        rate_limit={"request_max_limit": 1, "request_reset_duration": "1h"},
    )
    cleared = await update(
        gateway,
        "virtual-keys",
        key["id"],
        {
            name: None
            for name in (
                "description",
                "expires_at",
                "allowed_models",
                "allowed_providers",
                "max_parallel_requests",
                "team_id",
                "budget",
                "rate_limit",
            )
        },  # fmt: skip
    )
    assert cleared["allowed_models"] is None and cleared["allowed_providers"] is None
    assert cleared["expires_at"] is None and cleared["max_parallel_requests"] is None
    for absent in ("description", "team_id", "team", "budget", "budget_id", "rate_limit"):
        assert cleared[absent] is None
    assert (await counts(gateway))["budgets_count"] == 0


async def test_empty_description_clears_it(gateway):
    key = await create(gateway, "virtual-keys", name="k", description="d")
    cleared = await update(gateway, "virtual-keys", key["id"], {"description": ""})
    assert cleared["description"] is None


@pytest.mark.parametrize("field", ["name", "is_active"])
async def test_null_for_a_required_field_is_a_400(gateway, field):
    key = await create(gateway, "virtual-keys", name="k")
    error = await bad_request(gateway, "PUT", f"/virtual-keys/{key['id']}", {field: None})
    assert field in error["error"] and "null" in error["error"]


async def test_empty_update_changes_only_updated_at(gateway):
    _, team, _ = await make_parents(gateway)
    key = await create(
        gateway,
        "virtual-keys",
        name="k",
        team_id=team["id"],
        allowed_models=["m"],
        budget={"max_limit": 5, "reset_duration": "1h"},
        rate_limit={"token_max_limit": 10, "token_reset_duration": "1h"},
    )
    before = await get_entity(gateway, "virtual-keys", key["id"])
    after = await update(gateway, "virtual-keys", key["id"], {})
    assert without(after, "updated_at") == without(before, "updated_at")
    assert after["updated_at"] > before["updated_at"]
    assert after["budget"]["updated_at"] == before["budget"]["updated_at"]


async def test_switching_between_team_and_customer(gateway):
    customer, team, _ = await make_parents(gateway)
    key = await create(gateway, "virtual-keys", name="k", team_id=team["id"])
    moved = await update(gateway, "virtual-keys", key["id"], {"customer_id": customer["id"]})
    assert moved["customer_id"] == customer["id"] and moved["customer"]["id"] == customer["id"]
    assert moved["team_id"] is None and moved.get("team") is None
    back = await update(gateway, "virtual-keys", key["id"], {"team_id": team["id"]})
    assert back["team_id"] == team["id"] and back["team"]["customer_id"] == customer["id"]
    assert back["customer_id"] is None and back["customer"] is None
    # One given, the other null: the given one wins.
    mixed = await update(
        gateway, "virtual-keys", key["id"], {"team_id": None, "customer_id": customer["id"]}
    )
    assert mixed["customer_id"] == customer["id"] and mixed["team_id"] is None
    detached = await update(
        gateway, "virtual-keys", key["id"], {"team_id": None, "customer_id": None}
    )
    assert detached["team_id"] is None and detached["customer_id"] is None


async def test_concurrent_updates_all_succeed(gateway):
    key = await create(
        gateway, "virtual-keys", name="k", budget={"max_limit": 1, "reset_duration": "1h"}
    )

    async def put(i: int):
        return await update(
            gateway,
            "virtual-keys",
            key["id"],
            {"description": f"writer {i}", "budget": {"max_limit": i}},
        )

    results = await asyncio.gather(*(put(i) for i in range(20)))
    assert len(results) == 20
    final = await get_entity(gateway, "virtual-keys", key["id"])
    writer = int(final["description"].split()[1])
    assert final["budget"]["max_limit"] == writer  # one writer's update, whole
    assert (await counts(gateway))["budgets_count"] == 1


async def test_concurrent_creates_get_distinct_ids_and_values(gateway):
    keys = await asyncio.gather(*(create(gateway, "virtual-keys", name=f"k{i}") for i in range(10)))
    assert len({k["id"] for k in keys}) == 10
    assert len({k["value"] for k in keys}) == 10
    assert len(await listing(gateway, "virtual-keys")) == 10


async def test_the_running_gateway_sees_a_write_at_once(gateway, make_settings):
    key = await create(gateway, "virtual-keys", name="k", allowed_models=["gpt-4o-mini"])
    headers = {"x-bf-vk": key["value"]}
    body = {"model": "claude-haiku-4-5", "messages": [{"role": "user", "content": "hi"}]}
    refused = await gateway.post("/v1/chat/completions", json=body, headers=headers)
    assert refused.status_code == 403, refused.text
    await update(gateway, "virtual-keys", key["id"], {"allowed_models": None})
    allowed = await gateway.post("/v1/chat/completions", json=body, headers=headers)
    assert allowed.status_code == 200, allowed.text
    await update(gateway, "virtual-keys", key["id"], {"is_active": False})
    inactive = await gateway.post("/v1/chat/completions", json=body, headers=headers)
    assert inactive.status_code == 403
    await admin(gateway, "DELETE", f"/virtual-keys/{key['id']}", status=200)
    gone = await gateway.post("/v1/chat/completions", json=body, headers=headers)
    assert gone.status_code in (401, 403)
