"""Unset links and unset lists are ``null``, never missing (docs/governance-api.md,
Bifrost's clients): a team without a customer answers ``"customer_id": null, "customer": null``.
Every entity has the same keys whatever is set, and the OpenAPI document says so."""

from __future__ import annotations

from typing import Any

from tests.governance.helpers import create, get_entity

from tollhouse.admin.routes import document

LINKS = {
    "customers": ("budget_id", "budget", "rate_limit_id", "rate_limit"),
    "teams": ("customer_id", "customer", "budget_id", "budget", "rate_limit_id", "rate_limit"),
    "virtual-keys": (
        "team_id",
        "team",
        "customer_id",
        "customer",
        "budget_id",
        "budget",
        "rate_limit_id",
        "rate_limit",
        "description",
    ),
}
SCHEMA = {"customers": "CustomerRead", "teams": "TeamRead", "virtual-keys": "VirtualKeyRead"}
LIMITS = {
    "budget": {"max_limit": 10, "reset_duration": "1d"},
    "rate_limit": {"request_max_limit": 5, "request_reset_duration": "1m"},
}


def assert_matches(doc: dict[str, Any], name: str, body: dict[str, Any]) -> None:
    """``body`` has exactly the schema's properties, all of them required."""
    schema = doc["components"]["schemas"][name]
    assert set(body) == set(schema["properties"]), (name, set(body) ^ set(schema["properties"]))
    assert set(schema["required"]) == set(schema["properties"]), name
    for field, value in body.items():
        if value is None:
            allowed = {k: v for k, v in schema["properties"][field].items() if k != "title"}
            assert {"type": "null"} in allowed.get("anyOf", []) or allowed == {"type": "null"}, (
                name,
                field,
            )


async def test_unset_links_are_null_and_every_shape_is_complete(gateway):
    doc = document()
    minimal = {kind: await create(gateway, kind, name="bare") for kind in LINKS}
    for kind, entity in minimal.items():
        for field in LINKS[kind]:
            assert field in entity and entity[field] is None, (kind, field, entity)
        assert_matches(doc, SCHEMA[kind], entity)

    customer = await create(gateway, "customers", name="c", **LIMITS)
    team = await create(gateway, "teams", name="t", customer_id=customer["id"], **LIMITS)
    key = await create(gateway, "virtual-keys", name="k", team_id=team["id"], **LIMITS)
    full = {"customers": customer, "teams": team, "virtual-keys": key}
    for kind, entity in full.items():
        assert set(entity) == set(minimal[kind]), kind
        assert_matches(doc, SCHEMA[kind], entity)
    assert_matches(doc, "TeamRef", key["team"])
    assert_matches(doc, "CustomerRef", team["customer"])
    assert_matches(
        doc, "TeamRef", (await get_entity(gateway, "customers", customer["id"]))["teams"][0]
    )
    assert_matches(doc, "BudgetRead", team["budget"])
    assert_matches(doc, "RateLimitRead", team["rate_limit"])
    assert team["rate_limit"]["token_max_limit"] is None  # an unset limit too
    bare_team = (await create(gateway, "teams", name="t2"))["id"]
    listed = await gateway.get(f"/api/governance/teams/{bare_team}")
    assert '"customer_id":null' in listed.text and '"customer":null' in listed.text
