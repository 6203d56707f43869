"""Every ``/api`` and ``/catalog`` operation, called on the in-process app — its happy
path and at least one refusal — with each real answer checked against the OpenAPI
document: the status is one the operation documents, the content type is JSON, and the
body validates against the document's schema for that status (``jsonschema_rs``, the
components resolved).

The calls run in the order an operator would make them (create, read, use, delete), so
the answers hold real data: budgets and rate limits with live counters, a usage record,
alert events with deliveries. The last step checks that no operation was left out.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

import httpx
import jsonschema_rs
import pytest
from devtools.stripe_wire import sign as stripe_sign
from tests.credits.stripe_support import SECRET_KEY, SUCCESS_URL
from tests.credits.stripe_support import WEBHOOK_SECRET as STRIPE_WEBHOOK_SECRET
from tests.support import running

from tollhouse.admin.routes import document
from tollhouse.alerts.signing import sign
from tollhouse.db import create_engine

ADMIN_KEY = "conformance-admin-key-0123456789abcdef"
WEBHOOK_SECRET = "conformance-webhook-secret-0123456789"
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}
WRONG_KEY = {"Authorization": "Bearer not-the-admin-key-0123456789abcdef"}
BUDGET = {"max_limit": 10, "reset_duration": "1d", "alert_thresholds": [0.5, 1]}
RATE = {
    "request_max_limit": 100,
    "request_reset_duration": "1m",
    "token_max_limit": 100000,
    "token_reset_duration": "1h",
}
EVENT = {
    "spend": 98.5,
    "max_budget": 100,
    "token": "88dc28d0f030c55ed4ab77ed8faf098196cb1c05df778539800c9f1243fe6b4b",
    "team_id": "search",
    "event": "threshold_crossed",
    "event_group": "key",
    "event_message": "Key crossed 95% of its budget",
}

DOC = document()


def resolve(ref: str) -> Any:
    node: Any = DOC
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


_VALIDATORS: dict[str, Any] = {}


def validator(schema: dict[str, Any]) -> Any:
    key = json.dumps(schema, sort_keys=True)
    if key not in _VALIDATORS:
        rooted = {**schema, "components": DOC["components"]}
        _VALIDATORS[key] = jsonschema_rs.Draft202012Validator(rooted, validate_formats=True)
    return _VALIDATORS[key]


class Conformance:
    """Calls operations and checks each answer against the document."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.seen: dict[tuple[str, str], set[int]] = defaultdict(set)
        self.key = ""  # a virtual key's value, once one is made

    async def call(
        self,
        method: str,
        template: str,
        status: int,
        *,
        ids: dict[str, str] | None = None,
        **request: Any,
    ) -> Any:
        path = template.format(**(ids or {}))
        request.setdefault("headers", ADMIN)
        response = await self.client.request(method, path, **request)
        assert response.status_code == status, (method, path, response.text)
        problems = self.problems(method, template, response)
        assert not problems, (method, path, status, problems, response.text[:2000])
        self.seen[(method.lower(), template)].add(status)
        return response.json()

    def problems(self, method: str, template: str, response: httpx.Response) -> list[str]:
        operation = DOC["paths"][template][method.lower()]
        answer = operation["responses"].get(str(response.status_code))
        if answer is None:
            return [f"status {response.status_code} is not documented"]
        if "$ref" in answer:
            answer = resolve(answer["$ref"])
        if response.headers.get("content-type") != "application/json":
            return [f"content-type {response.headers.get('content-type')!r}"]
        schema = answer["content"]["application/json"]["schema"]
        return [
            f"{'/'.join(map(str, error.instance_path))}: {error.message}"
            for error in validator(schema).iter_errors(response.json())
        ]


def signed(body: dict[str, Any], secret: str = WEBHOOK_SECRET) -> dict[str, Any]:
    raw = json.dumps(body).encode()
    headers = {"Tollhouse-Signature": sign(secret, raw), "content-type": "application/json"}
    return {"content": raw, "headers": headers}


@pytest.fixture
def settings(make_settings, stripe_checkout):
    return make_settings(
        stripe_secret_key=SECRET_KEY,
        stripe_webhook_secret=STRIPE_WEBHOOK_SECRET,
        stripe_api_base=stripe_checkout.url,
        stripe_success_url=SUCCESS_URL,
        stripe_max_network_retries=0,
        admin_key=ADMIN_KEY,
        inbound_webhook_secret=WEBHOOK_SECRET,
        secret_key="conformance-secret-key-0123456789abcdefgh",
        alert_poll_interval_s=0.05,
    )


async def test_every_route_answers_as_its_document_says(settings, tmp_path, make_settings):
    async with running(settings) as (app, client):
        api = Conformance(client)
        await governance(api)
        await usage(api, app)
        await alerts(api)
        await credits(api)
        await policies(api)
        await sandboxes(api)
        await debug(api, app, make_settings, tmp_path)
        await catalog(api, settings)
        await api.call("GET", "/api/openapi.json", 200)
        await api.call("GET", "/api/openapi.json", 401, headers=WRONG_KEY)
        await api.call(
            "DELETE",
            "/api/governance/customers/{id}",
            413,
            ids={"id": "x"},
            content=b"x" * (settings.max_request_body_bytes + 1),
        )

    for path, item in DOC["paths"].items():
        for method in item:
            statuses = api.seen[(method, path)]
            assert any(s < 300 for s in statuses), f"{method} {path}: no success checked"
            assert any(s >= 400 for s in statuses), f"{method} {path}: no refusal checked"


async def governance(api: Conformance) -> None:
    g = "/api/governance"
    customer = await api.call(
        "POST", f"{g}/customers", 201, json={"name": "acme", "budget": BUDGET, "rate_limit": RATE}
    )
    customer_id = customer["customer"]["id"]
    bare = (await api.call("POST", f"{g}/customers", 201, json={"name": "bare"}))["customer"]
    await api.call("POST", f"{g}/customers", 400, json={"name": " "})
    await api.call("GET", f"{g}/customers", 200)
    await api.call("GET", f"{g}/customers", 401, headers=WRONG_KEY)
    one = {"id": customer_id}
    await api.call("GET", f"{g}/customers/{{id}}", 200, ids=one)
    await api.call("GET", f"{g}/customers/{{id}}", 404, ids={"id": "nope"})
    await api.call("PUT", f"{g}/customers/{{id}}", 200, ids=one, json={"name": "acme2"})
    await api.call("PUT", f"{g}/customers/{{id}}", 400, ids=one, json={"name": None})
    await api.call("DELETE", f"{g}/customers/{{id}}", 404, ids={"id": "nope"})

    team = (
        await api.call(
            "POST",
            f"{g}/teams",
            201,
            json={
                "name": "search",
                "customer_id": customer_id,
                "budget": BUDGET,
                "on_meter_failure": "open",
            },
        )
    )["team"]
    await api.call("POST", f"{g}/teams", 400, json={"name": "t", "customer_id": "nope"})
    await api.call("GET", f"{g}/teams", 200, params={"customer_id": customer_id})
    await api.call("GET", f"{g}/teams", 401, headers=WRONG_KEY)
    await api.call("GET", f"{g}/teams/{{id}}", 200, ids={"id": team["id"]})
    await api.call("GET", f"{g}/teams/{{id}}", 404, ids={"id": "nope"})
    await api.call(
        "PUT", f"{g}/teams/{{id}}", 200, ids={"id": team["id"]}, json={"rate_limit": RATE}
    )
    await api.call("PUT", f"{g}/teams/{{id}}", 404, ids={"id": "nope"}, json={})
    await api.call("GET", f"{g}/customers/{{id}}", 200, ids=one)  # now with a team

    key = (
        await api.call(
            "POST",
            f"{g}/virtual-keys",
            201,
            json={
                "name": "prod",
                "team_id": team["id"],
                "budget": BUDGET,
                "rate_limit": RATE,
                "allowed_models": ["gpt-4o-mini"],
                "expires_at": "2099-01-01T00:00:00Z",
                "max_parallel_requests": 4,
            },
        )
    )["virtual_key"]
    await api.call(
        "POST", f"{g}/virtual-keys", 201, json={"name": "loose", "customer_id": bare["id"]}
    )
    await api.call(
        "POST",
        f"{g}/virtual-keys",
        400,
        json={"name": "k", "team_id": team["id"], "customer_id": customer_id},
    )
    await api.call("GET", f"{g}/virtual-keys", 200, params={"team_id": team["id"]})
    await api.call("GET", f"{g}/virtual-keys", 200)
    await api.call("GET", f"{g}/virtual-keys", 401, headers=WRONG_KEY)
    await api.call("GET", f"{g}/virtual-keys/{{id}}", 200, ids={"id": key["id"]})
    await api.call("GET", f"{g}/virtual-keys/{{id}}", 404, ids={"id": "nope"})
    await api.call(
        "PUT",
        f"{g}/virtual-keys/{{id}}",
        200,
        ids={"id": key["id"]},
        json={"description": "the production key"},
    )
    await api.call(
        "PUT", f"{g}/virtual-keys/{{id}}", 400, ids={"id": key["id"]}, content=b"{not json"
    )

    await api.call("GET", f"{g}/usage-stats", 200)
    await api.call("GET", f"{g}/usage-stats", 200, params={"virtual_key_id": key["id"]})
    await api.call("GET", f"{g}/usage-stats", 404, params={"virtual_key_id": "nope"})
    await api.call("POST", f"{g}/usage-reset", 200, json={"team_id": team["id"]})
    await api.call("POST", f"{g}/usage-reset", 400, json={})
    await api.call("POST", f"{g}/usage-reset", 404, json={"customer_id": "nope"})

    spare = (await api.call("POST", f"{g}/teams", 201, json={"name": "spare"}))["team"]
    await api.call("DELETE", f"{g}/teams/{{id}}", 200, ids={"id": spare["id"]})
    await api.call("DELETE", f"{g}/teams/{{id}}", 404, ids={"id": spare["id"]})
    await api.call("DELETE", f"{g}/customers/{{id}}", 200, ids={"id": bare["id"]})
    spare = await api.call("POST", f"{g}/virtual-keys", 201, json={"name": "spare"})
    spare_id = spare["virtual_key"]["id"]
    await api.call("POST", f"{g}/virtual-keys/{{id}}/rotate", 200, ids={"id": spare_id})
    await api.call("POST", f"{g}/virtual-keys/{{id}}/rotate", 404, ids={"id": "nope"})
    await api.call("DELETE", f"{g}/virtual-keys/{{id}}", 200, ids={"id": spare_id})
    await api.call("DELETE", f"{g}/virtual-keys/{{id}}", 404, ids={"id": spare_id})
    api.key = key["value"]


async def usage(api: Conformance, app: Any) -> None:
    # One request through the gateway with the key: live counters and a usage record.
    chat = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    key = {"Authorization": f"Bearer {api.key}"}
    response = await api.client.post("/v1/chat/completions", json=chat, headers=key)
    assert response.status_code == 200, response.text
    await app.services.recorder.flush()
    page = await api.call("GET", "/api/usage", 200, params={"limit": "10", "since": "2020-01-01"})
    assert page["count"] == 1 and page["usage"][0]["cost"] > 0
    await api.call("GET", "/api/usage", 200, params={"limit": "1", "until": "1700000000"})
    await api.call("GET", "/api/usage", 400, params={"limit": "²"})
    await api.call("GET", "/api/usage", 400, params={"since": "yesterday"})


async def credits(api: Conformance) -> None:
    c = "/api/credits/accounts"
    customer = await api.call("POST", "/api/governance/customers", 201, json={"name": "prepaid"})
    owner = {"owner_type": "customer", "owner_id": customer["customer"]["id"]}
    auto = {"enabled": True, "threshold": 5, "amount": 20, "monthly_cap": 100}
    account = (await api.call("POST", c, 201, json={**owner, "auto_topup": auto}))["account"]
    await api.call("POST", c, 409, json=owner)
    await api.call("POST", c, 400, json={"owner_type": "planet", "owner_id": "x"})
    await api.call("GET", c, 200, params={"owner_type": "customer"})
    await api.call("GET", c, 401, headers=WRONG_KEY)
    one = {"id": account["id"]}
    await api.call("GET", f"{c}/{{id}}", 200, ids=one)
    await api.call("GET", f"{c}/{{id}}", 404, ids={"id": "nope"})
    await api.call("PUT", f"{c}/{{id}}", 200, ids=one, json={"overdraft_limit": 1})
    await api.call("PUT", f"{c}/{{id}}", 400, ids=one, json={"overdraft_limit": None})
    grants = f"{c}/{{id}}/grants"
    headers = {**ADMIN, "Idempotency-Key": "conformance-1"}
    body = {"amount": 10, "category": "promotional", "expires_at": "2999-01-01T00:00:00Z"}
    await api.call("POST", grants, 201, ids=one, json=body, headers=headers)
    await api.call("POST", grants, 200, ids=one, json=body, headers=headers)
    await api.call("POST", grants, 409, ids=one, json={**body, "amount": 11}, headers=headers)
    await api.call("POST", grants, 400, ids=one, json={"amount": 0})
    await api.call("GET", grants, 200, ids=one)
    await api.call("GET", grants, 404, ids={"id": "nope"})
    ledger = f"{c}/{{id}}/ledger"
    await api.call("GET", ledger, 200, ids=one, params={"limit": "1"})
    await api.call("GET", ledger, 400, ids=one, params={"cursor": "-1"})
    checkout = f"{c}/{{id}}/checkout"
    await api.call("POST", checkout, 201, ids=one, json={"amount": 10})
    await api.call("POST", checkout, 400, ids=one, json={"amount": "10"})
    await api.call("POST", checkout, 404, ids={"id": "nope"}, json={"amount": 10})
    event = json.dumps(
        {
            "id": "evt_conformance",
            "type": "customer.created",
            "object": "event",
            "data": {"object": {"id": "cus_1", "object": "customer"}},
        }
    ).encode()
    hook = "/api/webhooks/stripe"
    signed_event = {
        "stripe-signature": stripe_sign(event, STRIPE_WEBHOOK_SECRET),
        "content-type": "application/json",
    }
    await api.call("POST", hook, 200, content=event, headers=signed_event)
    await api.call("POST", hook, 200, content=event, headers=signed_event)  # a duplicate
    await api.call("POST", hook, 401, content=event, headers={"stripe-signature": "t=1,v1=0"})
    await api.call("GET", f"{c}/{{id}}/topups", 200, ids=one)
    await api.call("GET", f"{c}/{{id}}/topups", 404, ids={"id": "nope"})


async def policies(api: Conformance) -> None:
    p = "/api/policies"
    body = {
        "name": "conformance-deny",
        "action": "llm.request",
        "effect": "deny",
        "condition": "request.user == 'blocked'",
        "attachments": [{"type": "tag", "tag": "conformance"}],
    }
    made = (await api.call("POST", p, 201, json=body))["policy"]
    await api.call("POST", p, 409, json=body)
    await api.call("POST", p, 400, json={**body, "name": "bad", "condition": "request.nope"})
    await api.call("GET", p, 200, params={"action": "llm.request"})
    await api.call("GET", p, 401, headers=WRONG_KEY)
    one = {"id": made["id"]}
    await api.call("GET", f"{p}/{{id}}", 200, ids=one)
    await api.call("GET", f"{p}/{{id}}", 404, ids={"id": "nope"})
    await api.call("PUT", f"{p}/{{id}}", 200, ids=one, json={"priority": 3})
    await api.call("PUT", f"{p}/{{id}}", 400, ids=one, json={"priority": "high"})
    test = {"input": {"request": {"user": "blocked"}}}
    await api.call("POST", f"{p}/{{id}}/test", 200, ids=one, json=test)
    await api.call("POST", f"{p}/{{id}}/test", 404, ids={"id": "nope"}, json=test)
    await api.call("GET", f"{p}/{{id}}/impact", 200, ids=one, params={"limit": "10"})
    await api.call("GET", f"{p}/{{id}}/impact", 404, ids={"id": "nope"})
    await api.call("GET", "/api/policy-decisions", 200, params={"decision": "deny"})
    await api.call("GET", "/api/policy-decisions", 400, params={"decision": "maybe"})
    await api.call("DELETE", f"{p}/{{id}}", 200, ids=one)
    await api.call("DELETE", f"{p}/{{id}}", 404, ids=one)


async def sandboxes(api: Conformance) -> None:
    s = "/api/sandboxes"
    static = {"name": "lab-1", "url": "https://lab.example/", "credentials": {"user": "u"}}
    made = (await api.call("POST", s, 201, json=static))["sandbox"]
    await api.call("POST", s, 409, json=static)
    await api.call("POST", s, 400, json={"name": " "})
    seeded = await api.call("POST", f"{s}/seed", 201, json={"count": 2})
    await api.call("POST", f"{s}/seed", 400, json={"count": 0})
    await api.call("GET", s, 200, params={"status": "available", "limit": "2"})
    await api.call("GET", s, 400, params={"status": "lost"})
    one = {"id": made["id"]}
    await api.call("GET", f"{s}/{{id}}", 200, ids=one)
    await api.call("GET", f"{s}/{{id}}", 404, ids={"id": "sbx_nothing"})
    await api.call("POST", f"{s}/{{id}}/mark-for-deletion", 200, ids={"id": seeded["created"][0]})
    await api.call("POST", f"{s}/{{id}}/mark-for-deletion", 404, ids={"id": "sbx_nothing"})
    for operation in ("sync", "cleanup", "auto-expire"):
        await api.call("POST", f"{s}/{operation}", 200)
        await api.call("POST", f"{s}/{operation}", 401, headers=WRONG_KEY)
    await api.call("GET", f"{s}/stats", 200)
    await api.call("GET", f"{s}/stats", 401, headers=WRONG_KEY)
    t = "/api/broker-tokens"
    token = (await api.call("POST", t, 201, json={"name": "labs", "tags": ["students"]}))["token"]
    await api.call("POST", t, 409, json={"name": "labs"})
    await api.call("GET", t, 200)
    await api.call("GET", t, 401, headers=WRONG_KEY)
    await api.call("DELETE", f"{t}/{{id}}", 200, ids={"id": token["id"]})
    await api.call("DELETE", f"{t}/{{id}}", 404, ids={"id": "btk_nothing"})


async def alerts(api: Conformance) -> None:
    channels = "/api/notification-channels"
    # Without a host, an email channel logs what it would send: no network needed.
    email = {
        "name": "ops",
        "type": "email",
        "is_default": True,
        "config": {"from": "gw@example.com", "to": ["ops@example.com"]},
    }
    made = (await api.call("POST", channels, 201, json=email))["notification_channel"]
    hook = {
        "name": "hook",
        "type": "webhook",
        "secret": "s3cr3t",
        "config": {"url": "http://127.0.0.1:9/hook"},
    }
    await api.call("POST", channels, 201, json=hook)
    await api.call("POST", channels, 400, json={**email, "config": {"to": []}})
    await api.call("GET", channels, 200)
    await api.call("GET", channels, 401, headers=WRONG_KEY)
    one = {"id": made["id"]}
    await api.call("GET", f"{channels}/{{id}}", 200, ids=one)
    await api.call("GET", f"{channels}/{{id}}", 404, ids={"id": "nope"})
    await api.call("PUT", f"{channels}/{{id}}", 200, ids=one, json={"name": "ops2"})
    await api.call("PUT", f"{channels}/{{id}}", 400, ids=one, json={"config": {"port": 0}})
    sent = await api.call("POST", f"{channels}/{{id}}/test", 200, ids=one)
    assert sent["preview"] is True
    await api.call("POST", f"{channels}/{{id}}/test", 404, ids={"id": "nope"})

    webhook = "/api/webhooks/budget"
    stored = await api.call("POST", webhook, 200, **signed(EVENT))
    assert stored["status"] == "stored"
    assert (await api.call("POST", webhook, 200, **signed(EVENT)))["status"] == "duplicate"
    await api.call("POST", webhook, 401, **signed(EVENT, secret="a-different-secret-0123456789"))
    await api.call("POST", webhook, 422, **signed({**EVENT, "event": "unheard_of"}))
    await api.call("POST", webhook, 400, **signed({**EVENT, "extra": "nul \x00"}))

    listed = await api.call("GET", "/api/alerts", 200, params={"limit": "5"})
    assert listed["count"] == 1
    await api.call("GET", "/api/alerts", 400, params={"limit": "0"})
    ids = {"id": stored["id"]}
    deliveries = await api.call("GET", "/api/alerts/{id}/deliveries", 200, ids=ids)
    assert deliveries["count"] == 1  # the default channel
    await api.call("GET", "/api/alerts/{id}/deliveries", 404, ids={"id": "nope"})

    await api.call("DELETE", f"{channels}/{{id}}", 200, ids=one)
    await api.call("DELETE", f"{channels}/{{id}}", 404, ids=one)


async def debug(api: Conformance, app: Any, make_settings: Any, tmp_path: Any) -> None:
    g = "/api/governance/debug"
    stats = await api.call("GET", f"{g}/stats", 200)
    assert stats["plugin_stats"]["loaded"] is True
    await api.call("GET", f"{g}/stats", 401, headers=WRONG_KEY)
    counters = await api.call("GET", f"{g}/counters", 200)
    assert {c["kind"] for c in counters["counters"]} >= {"budget", "tokens", "requests"}
    await api.call("GET", f"{g}/counters", 401, headers=WRONG_KEY)
    await api.call("GET", f"{g}/health", 200)
    await api.call("GET", f"{g}/health", 401, headers=WRONG_KEY)
    # A database that does not answer (a path no engine can open).
    broken = create_engine(make_settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/no/x.db"))
    working, app.services.engine = app.services.engine, broken
    try:
        await api.call("GET", f"{g}/health", 503)
    finally:
        app.services.engine = working
        await broken.dispose()


async def catalog(api: Conformance, settings: Any) -> None:
    # Public: no credential sent (an admin key would change nothing).
    none: dict[str, str] = {}
    models = await api.call("GET", "/catalog/models", 200, headers=none)
    assert models["count"] > 0
    await api.call(
        "GET", "/catalog/models", 200, headers=none, params={"provider": "openai", "mode": "chat"}
    )
    await api.call("GET", "/catalog/models", 400, headers=none, params={"routable": "maybe"})
    await api.call("GET", "/catalog/providers", 200, headers=none)
    await api.call(
        "GET",
        "/catalog/providers",
        413,
        headers=none,
        content=b"x" * (settings.max_request_body_bytes + 1),
    )
