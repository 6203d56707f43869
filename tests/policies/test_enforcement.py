"""Policies enforced at the one choke point of ``llm.request``.

The conformance walk: every inference route × stream mode × inbound format (and both
upstream wire formats behind them) passes through the policies — each answer names the
policies that ran (``x-tollhouse-applied-policies``) and the decision, and a denial is a
403 ``policy_denied`` naming the policy in the caller's own error shape, before any
upstream call and before any SSE byte. Then how a decision is made: deny wins, default
deny once a policy applies, attachments by key, team, customer and tag, priority,
``fail_mode``, the decision log and the metrics."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from tests.governance.helpers import HI, auth, chat, create_customer, create_key, create_team
from tests.policies.helpers import call, create_policy, decisions
from tests.support import metric, reached

APPLIED = "x-tollhouse-applied-policies"
DECISION = "x-tollhouse-policy-decision"

# route, model, stream; the model picks the upstream format (openai or anthropic).
CASES = [
    ("/v1/chat/completions", "gpt-4o-mini", False),
    ("/v1/chat/completions", "gpt-4o-mini", True),
    ("/v1/chat/completions", "claude-haiku-4-5", False),
    ("/v1/chat/completions", "claude-haiku-4-5", True),
    ("/v1/messages", "claude-haiku-4-5", False),
    ("/v1/messages", "claude-haiku-4-5", True),
    ("/v1/messages", "gpt-4o-mini", False),
    ("/v1/messages", "gpt-4o-mini", True),
    ("/v1/embeddings", "text-embedding-3-small", False),
]
IDS = [
    f"{path.rsplit('/', 1)[-1]}-{model.split('-')[0]}-{'stream' if s else 'plain'}"
    for path, model, s in CASES
]


def body_for(path: str, model: str, stream: bool) -> dict[str, Any]:
    if path.endswith("embeddings"):
        return {"model": model, "input": "hello"}
    return {"model": model, "messages": HI, "max_tokens": 5, "stream": stream}


async def send(
    client: httpx.AsyncClient, path: str, model: str, stream: bool, key: str | None = None
) -> httpx.Response:
    headers = auth(key) if key else {}
    return await client.post(path, json=body_for(path, model, stream), headers=headers)


@pytest.mark.parametrize(("path", "model", "stream"), CASES, ids=IDS)
async def test_every_route_and_mode_passes_the_choke_point(gateway, upstream, path, model, stream):
    endpoint = {"completions": "chat", "messages": "messages", "embeddings": "embeddings"}[
        path.rsplit("/", 1)[-1]
    ]
    await create_policy(gateway, name="allow-all")
    await create_policy(
        gateway,
        name="deny-this-route",
        effect="deny",
        priority=5,
        condition=f'request.endpoint == "{endpoint}" && request.user == "blocked"'
        f" && request.stream == {str(stream).lower()}",
    )
    allowed = await send(gateway, path, model, stream)
    assert allowed.status_code == 200, allowed.text
    assert allowed.headers[APPLIED] == "deny-this-route, allow-all"
    assert allowed.headers[DECISION].startswith("pdec_")
    if stream:
        assert allowed.headers["content-type"].startswith("text/event-stream")
    before = reached(upstream)

    body = body_for(path, model, stream)
    if path.endswith("messages"):
        body["metadata"] = {"user_id": "blocked"}
    else:
        body["user"] = "blocked"
    denied = await gateway.post(path, json=body)
    assert denied.status_code == 403, denied.text
    assert denied.headers["content-type"].startswith("application/json")  # no SSE byte
    assert reached(upstream) == before  # no upstream call
    assert denied.headers[APPLIED] == "deny-this-route, allow-all"
    error = denied.json()["error"]
    message = error["message"]
    assert "denied by policy deny-this-route" in message and denied.headers[DECISION] in message
    if path.endswith("messages"):
        assert denied.json()["type"] == "error" and error["type"] == "permission_error"
    else:
        assert (error["type"], error["code"]) == ("permission_error", "policy_denied")


async def test_no_policy_no_evaluation_and_an_empty_header(gateway):
    response = await chat(gateway, None)
    assert response.status_code == 200 and response.headers[APPLIED] == ""


async def test_deny_wins_and_the_highest_priority_deny_is_named(gateway):
    await create_policy(gateway, name="allow-all", priority=100)
    await create_policy(gateway, name="deny-low", effect="deny", priority=1)
    await create_policy(gateway, name="deny-high", effect="deny", priority=9)
    response = await chat(gateway, None)
    assert response.status_code == 403
    assert "deny-high" in response.json()["error"]["message"]
    assert response.headers[APPLIED] == "allow-all, deny-high, deny-low"


async def test_once_a_policy_applies_what_no_allow_matches_is_denied(gateway):
    await create_policy(gateway, name="only-openai", condition='resource.provider == "openai"')
    assert (await chat(gateway, None)).status_code == 200  # gpt-4o-mini: openai
    refused = await chat(gateway, None, model="claude-haiku-4-5")
    assert refused.status_code == 403
    assert "no allow policy matched (only-openai)" in refused.json()["error"]["message"]


async def test_deny_policies_alone_deny_everything_else(gateway):
    # The documented default: once any policy applies, a request needs an allow.
    await create_policy(gateway, name="no-streams", effect="deny", condition="request.stream")
    refused = await chat(gateway, None)
    assert refused.status_code == 403
    assert "no allow policy applies" in refused.json()["error"]["message"]


async def test_attachments_by_key_team_customer_and_tag(gateway):
    customer = await create_customer(gateway)
    team = await create_team(gateway, customer_id=customer["id"], tags=["research"])
    _, in_team = await create_key(gateway, team_id=team["id"])
    _, tagged = await create_key(gateway, tags=["intern"])
    key, named = await create_key(gateway)
    _, other = await create_key(gateway)
    await create_policy(gateway, name="allow-all")
    for attachment, caught in (
        ({"type": "customer", "id": customer["id"]}, in_team),
        ({"type": "team", "id": team["id"]}, in_team),
        ({"type": "tag", "tag": "research"}, in_team),  # the team's tag is the key's too
        ({"type": "tag", "tag": "intern"}, tagged),
        ({"type": "key", "id": key["id"]}, named),
    ):
        made = await create_policy(gateway, name="scoped", effect="deny", attachments=[attachment])
        assert (await chat(gateway, caught)).status_code == 403, attachment
        assert (await chat(gateway, other)).status_code == 200, attachment
        await call(gateway, "DELETE", f"/{made['id']}")


async def test_a_disabled_policy_does_not_apply(gateway):
    made = await create_policy(gateway, name="deny-all", effect="deny")
    assert (await chat(gateway, None)).status_code == 403
    await call(gateway, "PUT", f"/{made['id']}", {"enabled": False})
    response = await chat(gateway, None)
    assert response.status_code == 200 and response.headers[APPLIED] == ""


# 1 / (max_tokens - 7): fine on write (the samples ask 0 and 1024), a division by zero
# for a request asking exactly 7 tokens.
BROKEN = "1 / (request.max_output_tokens - 7) > 0"


@pytest.mark.parametrize(
    ("effect", "fail_mode", "status"),
    [
        ("deny", "closed", 403),
        ("deny", "open", 200),
        ("allow", "closed", 403),
        ("allow", "open", 200),
    ],
)
async def test_an_engine_error_obeys_fail_mode(gateway, effect, fail_mode, status):
    if effect == "deny":
        await create_policy(gateway, name="allow-all", priority=-1)
    await create_policy(
        gateway, name="fragile", effect=effect, fail_mode=fail_mode, condition=BROKEN
    )
    response = await chat(gateway, None, max_tokens=7)
    assert response.status_code == status, response.text
    if status == 403:
        assert "division by zero" in response.json()["error"]["message"]
    errors = await metric(
        gateway, "tollhouse_policy_errors_total", engine="cel", fail_mode=fail_mode
    )
    assert errors == 1
    logged = (await decisions(gateway))["decisions"]
    assert logged[0]["id"] == response.headers[DECISION]  # an error is always logged
    assert logged[0]["errors"][0]["policy"] == "fragile"


async def test_denials_are_in_the_decision_log_and_counted(gateway):
    _, value = await create_key(gateway, tags=["intern"])
    await create_policy(gateway, name="allow-all")
    made = await create_policy(
        gateway, name="no-interns", effect="deny", condition='"intern" in principal.tags'
    )
    assert (await chat(gateway, None)).status_code == 200
    refused = await chat(gateway, value)
    assert refused.status_code == 403
    page = await decisions(gateway, f"?policy_id={made['id']}")
    [logged] = page["decisions"]
    assert logged["id"] == refused.headers[DECISION]
    assert (logged["decision"], logged["policy_name"]) == ("deny", "no-interns")
    assert logged["request_id"] == refused.headers["x-request-id"]
    assert logged["resource"] == {"model": "gpt-4o-mini", "provider": "openai", "region": ""}
    assert logged["applied"] == ["allow-all", "no-interns"]
    assert (await decisions(gateway, "?decision=allow"))["count"] == 0  # not logged
    await decisions(gateway, "?decision=maybe", 400)
    assert await metric(gateway, "tollhouse_policy_decisions_total", decision="deny") == 1
    assert await metric(gateway, "tollhouse_policy_decisions_total", decision="allow") == 1


async def test_allows_are_logged_when_asked(make_settings):
    from tests.support import running

    async with running(make_settings(policy_log_allows=True)) as (_, client):
        await create_policy(client, name="allow-all")
        response = await chat(client, None)
        assert response.status_code == 200
        page = await decisions(client, "")
        assert [d["id"] for d in page["decisions"]] == [response.headers[DECISION]]
        assert page["decisions"][0]["reason"] == "allowed by policy allow-all"


async def test_rego_and_an_external_opa_decide_requests_too(make_settings, opa):
    from tests.support import running

    streams = (
        "package enforcement.streams\n\ndefault match := false\n\nmatch if input.request.stream\n"
    )
    opa.put_policy("enforcement-streams", streams)
    rego = (
        'package interns\n\ndefault match := false\n\nmatch if "intern" in input.principal.tags\n'
    )
    async with running(make_settings(policy_opa_url=opa.url)) as (_, client):
        _, intern = await create_key(client, tags=["intern"])
        _, probe = await create_key(client, tags=["probe"])
        await create_policy(client, name="allow-all", priority=-10)
        await create_policy(client, name="no-interns", effect="deny", engine="rego", condition=rego)
        await create_policy(
            client,
            name="no-streams",
            effect="deny",
            engine="opa",
            condition="enforcement/streams/match",
        )
        await create_policy(
            client,
            name="nowhere",
            effect="deny",
            engine="opa",
            condition="enforcement/nothing/match",  # OPA answers {}: undefined
            attachments=[{"type": "tag", "tag": "probe"}],
        )
        allowed = await chat(client, None)
        assert allowed.status_code == 200
        assert allowed.headers[APPLIED] == "no-interns, no-streams, allow-all"
        refused = await chat(client, intern)
        assert refused.status_code == 403 and "no-interns" in refused.json()["error"]["message"]
        streamed = await chat(client, None, stream=True)
        assert streamed.status_code == 403
        assert "denied by policy no-streams" in streamed.json()["error"]["message"]
        undefined = await chat(client, probe)
        assert undefined.status_code == 403
        assert "policy nowhere answered undefined" in undefined.json()["error"]["message"]


async def test_other_actions_call_the_same_decider(app, gateway):
    from tollhouse.policies.decide import ANONYMOUS

    await create_policy(gateway, name="llm-only", action="llm.request")
    gate = app.services.policies
    # No policy of tool.execute applies: allowed, nothing evaluated.
    decision = await gate.decide("tool.execute", ANONYMOUS, {"tool": "shell"}, {})
    assert decision.allowed and decision.applied == ()
    # A "*" policy applies to every action.
    await create_policy(gateway, name="everything-denied", action="*", effect="deny", priority=1)
    decision = await gate.decide("sandbox.allocate", ANONYMOUS, {}, {"pool": "default"})
    assert not decision.allowed and decision.reason == "denied by policy everything-denied"
    assert decision.applied == ("everything-denied",)
