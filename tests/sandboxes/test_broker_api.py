"""``/v1/allocate`` and ``/v1/sandboxes/{id}`` as tracks call them: 201 for a new lease,
200 with the same sandbox for the track's own, 503 ``pool_exhausted`` with
``Retry-After`` on an empty pool, owner-only mark-for-deletion, 404 unknown, OpenAI-shaped
errors; broker tokens and the admin key are separate credentials."""

from __future__ import annotations

from datetime import datetime, timedelta

import httpx
import pytest
from tests.sandboxes.helpers import admin, allocate, new_token, seed, track
from tests.support import JSON_WRITES, decode

from tollhouse.app import create_app

ADMIN_KEY = "a" * 40


async def test_a_lease_then_the_same_one_for_the_same_track(gateway):
    token = await new_token(gateway)
    await seed(gateway, 2)
    first = await allocate(gateway, token, "track-1")
    assert first.status_code == 201, first.text
    lease = decode(first)
    sandbox = lease["sandbox"]
    assert lease["created"] is True and sandbox["status"] == "allocated"
    assert sandbox["track_id"] == "track-1" and sandbox["backend"] == "local"
    assert first.headers["location"] == f"/v1/sandboxes/{sandbox['id']}"
    lasts = datetime.fromisoformat(sandbox["expires_at"]) - datetime.fromisoformat(
        sandbox["allocated_at"]
    )
    assert lasts == timedelta(hours=2, minutes=15)  # the default lab and grace

    again = await allocate(gateway, token, "track-1", {"lab_duration_hours": 5})
    assert again.status_code == 200 and decode(again)["sandbox"]["id"] == sandbox["id"]
    assert decode(again)["created"] is False and "location" not in again.headers

    other = await allocate(gateway, token, "track-2", {"lab_duration_hours": 0.5})
    assert other.status_code == 201 and decode(other)["sandbox"]["id"] != sandbox["id"]
    leased = decode(other)["sandbox"]
    assert datetime.fromisoformat(leased["expires_at"]) - datetime.fromisoformat(
        leased["allocated_at"]
    ) == timedelta(minutes=45)

    empty = await allocate(gateway, token, "track-3")
    assert empty.status_code == 503 and empty.headers["retry-after"] == "30"
    error = decode(empty)["error"]
    assert error["code"] == "pool_exhausted" and error["type"] == "api_error"
    # The track holding one still gets it, pool empty or not.
    assert (await allocate(gateway, token, "track-1")).status_code == 200
    stats = await admin(gateway, "GET", "/sandboxes/stats")
    assert stats["by_status"]["allocated"] == 2 and stats["exhausted"] == 1


async def test_owner_only_mark_for_deletion_and_reads(make_settings, both_stores):
    """On SQLite, then on Postgres (where a track's read and mark are one statement each)."""
    app = create_app(make_settings(**both_stores))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(
            transport=transport, base_url="http://127.0.0.1", headers=JSON_WRITES
        ) as client:
            await _owner_only_mark_for_deletion_and_reads(client)


async def _owner_only_mark_for_deletion_and_reads(gateway: httpx.AsyncClient) -> None:
    token = await new_token(gateway)
    await seed(gateway, 1)
    sandbox = decode(await allocate(gateway, token, "owner"))["sandbox"]
    path = f"/v1/sandboxes/{sandbox['id']}"

    seen = await gateway.get(path, headers=track(token, "owner"))
    assert seen.status_code == 200 and decode(seen)["sandbox"]["status"] == "allocated"
    hidden = await gateway.get(path, headers=track(token, "someone-else"))
    assert hidden.status_code == 403 and decode(hidden)["error"]["code"] == "not_owner"
    assert "owner" not in hidden.text.replace("not_owner", "")  # who holds it stays hidden
    refused = await gateway.post(f"{path}/mark-for-deletion", headers=track(token, "someone-else"))
    assert refused.status_code == 403 and decode(refused)["error"]["code"] == "not_owner"

    marked = await gateway.post(f"{path}/mark-for-deletion", headers=track(token, "owner"))
    assert marked.status_code == 200 and decode(marked)["sandbox"]["status"] == "pending_deletion"
    twice = await gateway.post(f"{path}/mark-for-deletion", headers=track(token, "owner"))
    assert twice.status_code == 200  # asked again: the same answer

    unknown = await gateway.get("/v1/sandboxes/sbx_nothing", headers=track(token, "owner"))
    assert unknown.status_code == 404 and decode(unknown)["error"]["type"] == "not_found_error"
    gone = await gateway.post(
        "/v1/sandboxes/sbx_nothing/mark-for-deletion", headers=track(token, "owner")
    )
    assert gone.status_code == 404


@pytest.mark.parametrize(
    ("headers", "status", "says"),
    [
        ({}, 401, "broker token is required"),
        ({"authorization": "Bearer tbk-wrong"}, 401, "unknown or revoked"),
        ({"authorization": "Basic abc"}, 401, "broker token is required"),
    ],
)
async def test_a_track_without_a_good_token_is_401(gateway, headers, status, says):
    await seed(gateway, 1)
    response = await gateway.post("/v1/allocate", headers={"x-track-id": "t", **headers})
    assert response.status_code == status and says in response.text
    assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    ("headers", "body", "param"),
    [
        ({}, None, "X-Track-ID"),
        ({"x-track-id": "has space"}, None, "X-Track-ID"),
        ({"x-track-id": "t" * 129}, None, "X-Track-ID"),
        ({"x-track-id": "t", "idempotency-key": "bad key"}, None, "Idempotency-Key"),
        ({"x-track-id": "t"}, {"lab_duration_hours": 0}, "lab_duration_hours"),
        ({"x-track-id": "t"}, {"lab_duration_hours": 25}, "lab_duration_hours"),
        ({"x-track-id": "t"}, {"lab_duration_hours": "two"}, "lab_duration_hours"),
    ],
)
async def test_bad_asks_are_400_naming_what(gateway, headers, body, param):
    token = await new_token(gateway)
    response = await gateway.post(
        "/v1/allocate", json=body, headers={"authorization": f"Bearer {token}", **headers}
    )
    assert response.status_code == 400, response.text
    assert decode(response)["error"]["param"] == param


async def test_idempotency_keys_belong_to_one_track(gateway):
    token = await new_token(gateway)
    await seed(gateway, 2)
    first = await allocate(gateway, token, "a", **{"idempotency-key": "k-1"})
    assert first.status_code == 201
    retry = await allocate(gateway, token, "a", **{"idempotency-key": "k-1"})
    assert retry.status_code == 200 and decode(retry)["sandbox"] == decode(first)["sandbox"]
    stolen = await allocate(gateway, token, "b", **{"idempotency-key": "k-1"})
    assert stolen.status_code == 409 and decode(stolen)["error"]["param"] == "Idempotency-Key"


async def test_revoked_tokens_stop_at_once(gateway):
    made = await admin(gateway, "POST", "/broker-tokens", {"name": "short-lived"}, 201)
    await seed(gateway, 2)
    assert (await allocate(gateway, made["value"], "t")).status_code == 201
    listed = await admin(gateway, "GET", "/broker-tokens")
    assert listed["count"] == 1 and made["value"] not in str(listed)
    assert listed["tokens"][0]["hint"].startswith("tbk-")
    await admin(gateway, "DELETE", f"/broker-tokens/{made['token']['id']}")
    assert (await allocate(gateway, made["value"], "t")).status_code == 401
    await admin(gateway, "DELETE", "/broker-tokens/btk_nothing", status=404)
    await admin(gateway, "POST", "/broker-tokens", {"name": "short-lived"}, 409)


async def test_the_admin_key_and_broker_tokens_are_separate(make_settings):
    app = create_app(make_settings(admin_key=ADMIN_KEY))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(
            transport=transport, base_url="http://127.0.0.1", headers=JSON_WRITES
        ) as client:
            operator = {"authorization": f"Bearer {ADMIN_KEY}"}
            made = await client.post("/api/broker-tokens", json={"name": "t"}, headers=operator)
            token = decode(made)["value"]
            await client.post("/api/sandboxes/seed", json={"count": 1}, headers=operator)
            # The admin key is no broker token, and a broker token opens no admin route.
            assert (await allocate(client, ADMIN_KEY, "t")).status_code == 401
            bearer = {"authorization": f"Bearer {token}"}
            assert (await client.get("/api/sandboxes/stats", headers=bearer)).status_code == 401
            assert (await allocate(client, token, "t")).status_code == 201


async def test_a_track_has_a_rate_limit(make_settings):
    app = create_app(make_settings(sandbox_track_requests_per_minute=3))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(
            transport=transport, base_url="http://127.0.0.1", headers=JSON_WRITES
        ) as client:
            token = await new_token(client)
            await seed(client, 1)
            codes = [(await allocate(client, token, "busy")).status_code for _ in range(4)]
            assert codes == [201, 200, 200, 429]
            limited = await allocate(client, token, "busy")
            assert int(limited.headers["retry-after"]) >= 1
            assert decode(limited)["error"]["code"] == "rate_limit_exceeded"
            assert (await allocate(client, token, "calm")).status_code == 503  # its own count


async def test_security_headers_and_cors(make_settings):
    app = create_app(make_settings(sandbox_cors_origins="https://labs.example"))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            token = await new_token(client)
            answer = await allocate(client, token, "t", origin="https://labs.example")
            assert answer.status_code == 503
            assert answer.headers["x-content-type-options"] == "nosniff"
            assert answer.headers["cache-control"] == "no-store"
            assert answer.headers["access-control-allow-origin"] == "https://labs.example"
            assert "retry-after" in answer.headers["access-control-expose-headers"]
            other = await allocate(client, token, "t", origin="https://evil.example")
            assert "access-control-allow-origin" not in other.headers
            assert other.headers["x-frame-options"] == "DENY"

            ask = {"origin": "https://labs.example", "access-control-request-method": "POST"}
            preflight = await client.options("/v1/allocate", headers=ask)
            assert preflight.status_code == 204
            assert "x-track-id" in preflight.headers["access-control-allow-headers"]
            evil = await client.options(
                "/v1/allocate", headers={**ask, "origin": "https://evil.example"}
            )
            assert evil.status_code == 403 and "access-control-allow-origin" not in evil.headers


async def test_a_sandbox_allocate_policy_decides(gateway):
    token = await new_token(gateway, tags=["students"])
    await seed(gateway, 2)
    await gateway.post(
        "/api/policies",
        json={
            "name": "short-labs",
            "action": "sandbox.allocate",
            "effect": "deny",
            "condition": "request.lab_minutes > 240 && 'students' in principal.tags",
        },
    )
    # Once a policy applies to an action, what no allow matches is denied: a baseline.
    await gateway.post(
        "/api/policies", json={"name": "labs", "action": "sandbox.allocate", "effect": "allow"}
    )
    denied = await allocate(gateway, token, "t", {"lab_duration_hours": 5})
    assert denied.status_code == 403, denied.text
    error = decode(denied)["error"]
    assert error["code"] == "policy_denied" and "short-labs" in error["message"]
    assert (await allocate(gateway, token, "t", {"lab_duration_hours": 4})).status_code == 201
