"""``/api/governance/customers`` and ``/api/governance/teams``: shapes, hierarchy,
filters, updates, deletes."""

from __future__ import annotations

import asyncio

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


async def test_minimal_customer(gateway):
    data = await admin(gateway, "POST", "/customers", {"name": "acme"}, status=201)
    assert data["message"] == "Customer created successfully"
    customer = data["customer"]
    assert customer["teams"] == [] and customer["virtual_keys"] is None
    for absent in ("budget", "budget_id", "rate_limit", "rate_limit_id"):
        assert customer[absent] is None
    assert await get_entity(gateway, "customers", customer["id"]) == customer


async def test_minimal_team(gateway):
    data = await admin(gateway, "POST", "/teams", {"name": "search"}, status=201)
    assert data["message"] == "Team created successfully"
    team = data["team"]
    assert team["virtual_keys"] is None
    for absent in ("customer", "customer_id", "budget", "rate_limit"):
        assert team[absent] is None
    assert await get_entity(gateway, "teams", team["id"]) == team


async def test_team_under_a_customer_embeds_it_one_level(gateway):
    customer = await create(
        gateway, "customers", name="acme", budget={"max_limit": 100000, "reset_duration": "1M"}
    )
    team = await create(gateway, "teams", name="search", customer_id=customer["id"])
    assert team["customer_id"] == customer["id"]
    embedded = team["customer"]
    assert embedded["id"] == customer["id"] and embedded["name"] == "acme"
    assert embedded["budget_id"] == customer["budget_id"] and "budget" not in embedded
    assert embedded["teams"] is None and embedded["virtual_keys"] is None
    # A team without a budget does not inherit its customer's in the response.
    assert team.get("budget") is None
    assert (await get_entity(gateway, "customers", customer["id"]))["budget"]["max_limit"] == 100000


async def test_customer_lists_its_teams_plainly(gateway):
    customer = await create(gateway, "customers", name="acme")
    names = ["a", "b", "c"]
    for name in names:
        await create(
            gateway,
            "teams",
            name=name,
            customer_id=customer["id"],
            budget={"max_limit": 10, "reset_duration": "1d"},
        )
    await create(gateway, "teams", name="elsewhere")
    teams = (await get_entity(gateway, "customers", customer["id"]))["teams"]
    assert [t["name"] for t in teams] == names
    for team in teams:
        assert team["customer_id"] == customer["id"] and team["virtual_keys"] is None
        assert "budget" not in team and team["budget_id"]  # plain: ids only
    (listed,) = await listing(gateway, "customers")
    assert [t["name"] for t in listed["teams"]] == names


async def test_key_under_a_team_reaches_the_customer(gateway):
    customer = await create(gateway, "customers", name="acme")
    team = await create(gateway, "teams", name="t", customer_id=customer["id"])
    key = await create(gateway, "virtual-keys", name="k", team_id=team["id"])
    assert key["team"]["customer_id"] == customer["id"]


async def test_team_list_filter(gateway):
    first = await create(gateway, "customers", name="first")
    second = await create(gateway, "customers", name="second")
    for i in range(3):
        await create(gateway, "teams", name=f"f{i}", customer_id=first["id"])
    for i in range(2):
        await create(gateway, "teams", name=f"s{i}", customer_id=second["id"])
    await create(gateway, "teams", name="alone")
    assert len(await listing(gateway, "teams")) == 6
    only_first = await listing(gateway, "teams", customer_id=first["id"])
    assert [t["name"] for t in only_first] == ["f0", "f1", "f2"]
    assert all(t["customer_id"] == first["id"] for t in only_first)
    assert len(await listing(gateway, "teams", customer_id=second["id"])) == 2
    assert await listing(gateway, "teams", customer_id="unknown") == []


@pytest.mark.parametrize("kind", ["customers", "teams"])
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
async def test_unknown_id_is_404(gateway, kind, method):
    label = {"customers": "Customer", "teams": "Team"}[kind]
    body = {} if method == "PUT" else None
    data = await admin(gateway, method, f"/{kind}/nope", body, status=404)
    assert data == {"error": f"{label} not found", "code": "not_found"}


@pytest.mark.parametrize("kind", ["customers", "teams", "virtual-keys"])
@pytest.mark.parametrize(
    "body", [{}, {"name": ""}, {"name": "   "}, {"name": None}, {"budget": None}]
)
async def test_name_is_required(gateway, kind, body):
    label = {"customers": "Customer", "teams": "Team", "virtual-keys": "Virtual key"}[kind]
    error = await bad_request(gateway, "POST", f"/{kind}", body)
    assert error == {"error": f"{label} name is required", "code": "invalid_value"}


@pytest.mark.parametrize("kind", ["customers", "teams"])
async def test_name_update(gateway, kind):
    entity = await create(gateway, kind, name="old")
    renamed = await update(gateway, kind, entity["id"], {"name": "new"})
    assert renamed["name"] == "new"
    assert without(renamed, "name", "updated_at") == without(entity, "name", "updated_at")
    for bad in ({"name": ""}, {"name": None}, {"name": 5}):
        await bad_request(gateway, "PUT", f"/{kind}/{entity['id']}", bad)


@pytest.mark.parametrize("kind", ["customers", "teams"])
async def test_empty_update_changes_only_updated_at(gateway, kind):
    entity = await create(
        gateway,
        kind,
        name="n",
        budget={"max_limit": 1, "reset_duration": "1w"},
        rate_limit={"request_max_limit": 3, "request_reset_duration": "1m"},
    )
    before = await get_entity(gateway, kind, entity["id"])
    after = await update(gateway, kind, entity["id"], {})
    assert without(after, "updated_at") == without(before, "updated_at")
    assert after["updated_at"] > before["updated_at"]


async def test_all_team_fields_together(gateway):
    customer = await create(gateway, "customers", name="c")
    team = await create(gateway, "teams", name="t")
    body = {
        "name": "renamed",
        "customer_id": customer["id"],
        "budget": {"max_limit": 50000, "reset_duration": "1w"},
        "rate_limit": {"token_max_limit": 9, "token_reset_duration": "1h"},
    }
    updated = await update(gateway, "teams", team["id"], body)
    assert updated["name"] == "renamed" and updated["customer"]["id"] == customer["id"]
    assert updated["budget"]["max_limit"] == 50000 and updated["budget"]["reset_duration"] == "1w"
    assert updated["rate_limit"]["token_max_limit"] == 9


async def test_all_customer_fields_together(gateway):
    customer = await create(gateway, "customers", name="c")
    body = {"name": "renamed", "budget": {"max_limit": 2000000, "reset_duration": "3M"}}
    updated = await update(gateway, "customers", customer["id"], body)
    assert updated["name"] == "renamed"
    assert updated["budget"]["max_limit"] == 2000000 and updated["budget"]["reset_duration"] == "3M"


async def test_team_customer_switch_and_detach(gateway):
    first = await create(gateway, "customers", name="first")
    second = await create(gateway, "customers", name="second")
    team = await create(gateway, "teams", name="t", customer_id=first["id"])
    moved = await update(gateway, "teams", team["id"], {"customer_id": second["id"]})
    assert moved["customer_id"] == second["id"] and moved["customer"]["name"] == "second"
    assert (await get_entity(gateway, "customers", first["id"]))["teams"] == []
    error = await bad_request(gateway, "PUT", f"/teams/{team['id']}", {"customer_id": "ghost"})
    assert "ghost" in error["error"]
    detached = await update(gateway, "teams", team["id"], {"customer_id": None})
    assert detached["customer_id"] is None and detached["customer"] is None


async def test_unknown_customer_on_team_create_is_400(gateway):
    error = await bad_request(gateway, "POST", "/teams", {"name": "t", "customer_id": "ghost"})
    assert "customer_id" in error["error"] and "ghost" in error["error"]
    assert (await counts(gateway))["teams_count"] == 0


async def test_deleting_a_team_detaches_its_keys(gateway):
    team = await create(gateway, "teams", name="t", budget={"max_limit": 1, "reset_duration": "1h"})
    key = await create(gateway, "virtual-keys", name="k", team_id=team["id"])
    data = await admin(gateway, "DELETE", f"/teams/{team['id']}", status=200)
    assert data == {"message": "Team deleted successfully"}
    await admin(gateway, "GET", f"/teams/{team['id']}", status=404)
    orphan = await get_entity(gateway, "virtual-keys", key["id"])
    assert orphan["team_id"] is None and orphan["team"] is None
    assert (await counts(gateway))["budgets_count"] == 0


async def test_deleting_a_customer_detaches_teams_and_keys(gateway):
    customer = await create(gateway, "customers", name="c")
    team = await create(gateway, "teams", name="t", customer_id=customer["id"])
    key = await create(gateway, "virtual-keys", name="k", customer_id=customer["id"])
    data = await admin(gateway, "DELETE", f"/customers/{customer['id']}", status=200)
    assert data == {"message": "Customer deleted successfully"}
    assert (await get_entity(gateway, "teams", team["id"]))["customer_id"] is None
    assert (await get_entity(gateway, "virtual-keys", key["id"]))["customer_id"] is None
    assert await listing(gateway, "customers") == []


async def test_concurrent_team_writes(gateway):
    customer = await create(gateway, "customers", name="c")
    teams = await asyncio.gather(
        *(create(gateway, "teams", name=f"t{i}", customer_id=customer["id"]) for i in range(10))
    )
    await asyncio.gather(
        *(update(gateway, "teams", t["id"], {"name": f"renamed {t['name']}"}) for t in teams),
        *(update(gateway, "customers", customer["id"], {"name": f"c{i}"}) for i in range(10)),
    )
    after = await get_entity(gateway, "customers", customer["id"])
    assert sorted(t["name"] for t in after["teams"]) == sorted(f"renamed t{i}" for i in range(10))
    assert after["name"] in {f"c{i}" for i in range(10)}  # one of the writes won, whole
    for team in teams:
        assert (await get_entity(gateway, "teams", team["id"]))["customer_id"] == customer["id"]
    versions = (await admin(gateway, "GET", "/debug/stats"))["database_stats"]["version"]
    assert versions == 1 + 10 + 20  # every write bumped the change version exactly once
