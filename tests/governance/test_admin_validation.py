"""Bad input on every governance write: always a 400 in the admin error shape, never a
5xx, never a partial write."""

from __future__ import annotations

import pytest
from tests.governance.helpers import bad_request, counts, create, get_entity

MALFORMED = [
    b"",
    b"   ",
    b"{",
    b'{"name": "x",}',
    b"[]",
    b'["name"]',
    b"null",
    b"1",
    b'"name"',
    b"true",
    b'{"name": NaN}',
    b'{"name": "x", "budget": {"max_limit": Infinity, "reset_duration": "1h"}}',
    b"\xff\xfe{",
    b"[" * 100000,
    b'{"name": "x", "deep": ' + b"[" * 5000 + b"]" * 5000 + b"}",
]

WRONG_TYPES = [
    {"name": 123},
    {"name": ["x"]},
    {"name": True},
    {"name": 12345, "budget": "not_an_object"},
    {"name": "x", "is_active": "not_boolean"},
    {"name": "x", "is_active": 1},
    {"name": "x", "description": 5},
    {"name": "x", "allowed_models": "gpt-4o"},
    {"name": "x", "allowed_models": [1, 2]},
    {"name": "x", "allowed_providers": {"openai": True}},
    {"name": "x", "max_parallel_requests": True},
    {"name": "x", "max_parallel_requests": 1.5},
    {"name": "x", "max_parallel_requests": 0},
    {"name": "x", "max_parallel_requests": "4"},
    {"name": "x", "expires_at": 1767225600},
    {"name": "x", "expires_at": "next tuesday"},
    {"name": "x", "team_id": 7},
    {"name": "x", "customer_id": ["a"]},
    {"name": "x", "rate_limit": []},
    {"name": "x", "expires_at": "0001-01-01T00:00:00+01:00"},
    {"name": "x", "description": "nul \u0000 inside"},
    {"name": "x", "allowed_models": ["gpt\u0000"]},
    {"name": "nul \u0000"},
]

ENDPOINTS = [("POST", "/customers"), ("POST", "/teams"), ("POST", "/virtual-keys")]


@pytest.mark.parametrize("body", MALFORMED, ids=range(len(MALFORMED)))
async def test_malformed_json_is_a_400(gateway, body):
    key = await create(gateway, "virtual-keys", name="k")
    targets = [*ENDPOINTS, ("PUT", f"/virtual-keys/{key['id']}"), ("POST", "/usage-reset")]
    for method, path in targets:
        error = await bad_request(gateway, method, path, body)
        assert error["code"] == "invalid_json"
        assert error["error"].startswith("Invalid JSON")
    assert (await counts(gateway))["virtual_keys_count"] == 1


@pytest.mark.parametrize("body", WRONG_TYPES, ids=range(len(WRONG_TYPES)))
async def test_wrong_types_are_a_400(gateway, body):
    for method, path in ENDPOINTS:
        if path != "/virtual-keys" and set(body) - {"name", "budget", "rate_limit"}:
            continue
        error = await bad_request(gateway, method, path, body)
        assert error["code"] == "invalid_value"
    assert set((await counts(gateway)).values()) == {0}


@pytest.mark.parametrize("body", WRONG_TYPES[4:], ids=range(len(WRONG_TYPES) - 4))
async def test_wrong_types_on_update_change_nothing(gateway, body):
    key = await create(gateway, "virtual-keys", name="k", allowed_models=["m"])
    before = await get_entity(gateway, "virtual-keys", key["id"])
    update = {k: v for k, v in body.items() if k != "name"} or body
    await bad_request(gateway, "PUT", f"/virtual-keys/{key['id']}", update)
    assert await get_entity(gateway, "virtual-keys", key["id"]) == before


async def test_error_names_the_field(gateway):
    body = {"name": "x", "budget": {"max_limit": "10", "reset_duration": "1h"}}
    error = await bad_request(gateway, "POST", "/customers", body)
    assert error["error"] == "budget.max_limit must be a number, got string"
    body = {"name": "x", "budget": {"max_limit": 1, "reset_duration": "1h",
                                    "alert_thresholds": [0.5, True]}}  # fmt: skip
    error = await bad_request(gateway, "POST", "/customers", body)
    assert error["error"] == "budget.alert_thresholds[1] must be a number, got boolean"
    error = await bad_request(gateway, "POST", "/teams", {"name": "x", "rate_limit": "fast"})
    assert error["error"] == "rate_limit must be an object, got string"


async def test_nesting_past_the_depth_bound_is_a_400_not_a_crash(gateway):
    # The one body reader's bound (max_json_depth, 128), before any recursive parser
    # meets the body: the answer no longer depends on the interpreter's stack headroom.
    before = await counts(gateway)
    for depth in (129, 900, 5000):
        nested = b"[" * depth + b"]" * depth
        body = b'{"name": "x", "deep": %s, "allowed_models": %s}' % (nested, nested)
        error = await bad_request(gateway, "POST", "/virtual-keys", body)
        assert error == {
            "error": "Invalid JSON: request body is nested deeper than 128 levels",
            "code": "invalid_json",
        }
    nested = b"[" * 100 + b"]" * 100
    body = b'{"name": "x", "deep": %s, "allowed_models": %s}' % (nested, nested)
    error = await bad_request(gateway, "POST", "/virtual-keys", body)
    # Decoded, then refused by the schema, naming the field.
    assert error["error"] == "allowed_models[0] must be a string, got array"
    assert await counts(gateway) == before


async def test_unknown_fields_are_ignored(gateway):
    # As Bifrost does, so that clients of its later versions keep working.
    key = await create(
        gateway, "virtual-keys", name="k", provider_configs=[{"provider": "openai"}], extra=1
    )
    assert "provider_configs" not in key and "extra" not in key


async def test_null_on_create_means_not_given(gateway):
    key = await create(
        gateway,
        "virtual-keys",
        name="k",
        is_active=None,
        description=None,
        team_id=None,
        customer_id=None,
        budget=None,
        rate_limit=None,
        allowed_models=None,
    )
    assert key["is_active"] is True and key["allowed_models"] is None
    assert key["team_id"] is None and key["budget"] is None


async def test_unknown_route_and_method(gateway):
    response = await gateway.get("/api/governance/nothing")
    assert response.status_code == 404 and response.json()["code"] == "not_found"
    response = await gateway.patch("/api/governance/customers/x", json={})
    assert response.status_code == 405 and response.json()["code"] == "method_not_allowed"


def _allowed(response) -> set[str]:
    return {method.strip() for method in response.headers["allow"].split(",")}


@pytest.mark.parametrize(
    ("path", "methods"),
    [
        ("/api/governance/customers", {"GET", "HEAD", "POST"}),
        ("/api/governance/customers/x", {"GET", "HEAD", "PUT", "DELETE"}),
        ("/api/governance/teams", {"GET", "HEAD", "POST"}),
        ("/api/governance/teams/x", {"GET", "HEAD", "PUT", "DELETE"}),
        ("/api/governance/virtual-keys", {"GET", "HEAD", "POST"}),
        ("/api/governance/virtual-keys/x", {"GET", "HEAD", "PUT", "DELETE"}),
        ("/api/governance/usage-reset", {"POST"}),
        ("/api/notification-channels", {"GET", "HEAD", "POST"}),
        ("/api/notification-channels/x", {"GET", "HEAD", "PUT", "DELETE"}),
        ("/api/notification-channels/x/test", {"POST"}),
        ("/api/alerts", {"GET", "HEAD"}),
        ("/api/usage", {"GET", "HEAD"}),
    ],
)
async def test_405_and_options_name_every_method_of_the_path(gateway, path, methods):
    # RFC 9110 §15.5.6: Allow lists the methods the resource supports, all of them.
    for method in ("OPTIONS", "PATCH"):
        response = await gateway.request(method, path)
        assert response.status_code == 405, (method, path)
        assert response.json()["code"] == "method_not_allowed"
        assert _allowed(response) == methods, (method, path)


async def test_head_is_answered_as_get(gateway):
    response = await gateway.head("/api/governance/customers")
    assert response.status_code == 200 and response.content == b""


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
async def test_budget_webhook_wrong_method_is_405(gateway, method):
    # Outside the admin mount, but under /api: not the mount's 404.
    response = await gateway.request(method, "/api/webhooks/budget")
    assert response.status_code == 405
    assert response.json()["code"] == "method_not_allowed"
    assert response.headers["allow"] == "POST"
