"""Agent token budgets per tenant and persona: claimed in the same reservation as the
key's own counters, settled to the usage record, rebuilt from the ledger after a
restart; a call over one is refused before the provider with nothing consumed, and
what the key does outside its sessions is not counted."""

from __future__ import annotations

from tests.agents.test_worker import turn
from tests.governance.helpers import auth, create_customer, create_key
from tests.support import decode, records, running


async def say(gateway, key: str, persona: str | None, session_id: str | None = None):
    body = {"message": "Say something", "persona_id": persona}
    if session_id:
        body["session_id"] = session_id
    sent = await gateway.post("/v1/session/message", json=body, headers=auth(key))
    assert sent.status_code == 200, sent.text
    accepted = decode(sent)
    got = await turn(gateway, key, accepted["session_id"], accepted["event_id"])
    return accepted["session_id"], got


def tokens(used: list[dict]) -> int:
    return sum(r["prompt_tokens"] + r["completion_tokens"] for r in used)


async def test_a_persona_budget_refuses_once_spent_and_others_go_on(
    make_settings, both_deployments
):
    # No tools offered: their definitions would count in every call's worst case.
    settings = make_settings(
        **both_deployments,
        agent_persona_token_budgets={"support": 120},
        agent_max_tokens=16,
        agent_tools="",
    )
    async with running(settings) as (app, gateway):
        customer = await create_customer(gateway, name="acme")
        key, value = await create_key(gateway, name="agent", customer_id=customer["id"])
        session_id, ended = None, []
        for _ in range(20):  # each turn draws on the persona's 120 tokens
            session_id, ended = await say(gateway, value, "support", session_id)
            if ended[0]["type"] == "error":
                break
        assert [e["type"] for e in ended] == ["error", "done"], ended
        assert ended[0]["code"] == "agent_budget_exceeded"
        assert "persona 'support'" in ended[0]["text"]
        used = await records(gateway, app, key_id=key["id"])
        assert used and tokens(used) <= 120
        assert {(r["session_id"], r["persona_id"]) for r in used} == {(session_id, "support")}
        # Refused with nothing consumed: no model call, a record of the refusal at no cost.
        _, again = await say(gateway, value, "support", session_id)
        assert again[0]["code"] == "agent_budget_exceeded"
        assert len(await records(gateway, app, key_id=key["id"])) == len(used)
        refusals = [
            r
            for r in await records(gateway, app, refused=True, key_id=key["id"])
            if r["status"] == "refused"
        ]
        assert len(refusals) == 2 and {r["session_id"] for r in refusals} == {session_id}
        assert all(r["cost"] == 0 and r["http_status"] == 429 for r in refusals), refusals
        # Another persona has its own budget (none here), and the key's own calls are
        # not agent calls.
        _, other = await say(gateway, value, "sales")
        assert other[-2]["type"] == "message"
        plain = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
        direct = await gateway.post("/v1/chat/completions", json=plain, headers=auth(value))
        assert direct.status_code == 200
        page = decode(await gateway.get("/api/usage", params={"session_id": session_id}))
        assert page["total"] == len(used) + len(refusals)

    # After a restart the counter starts from the ledger's records of the persona.
    async with running(settings) as (app, gateway):
        _, after = await say(gateway, value, "support", session_id)
        assert after[0]["code"] == "agent_budget_exceeded"
        assert f"{tokens(used)} of 120 tokens used" in after[0]["text"]


async def test_the_tenant_budget_is_shared_by_every_persona_and_key(make_settings):
    settings = make_settings(agent_tenant_token_budget=100, agent_max_tokens=16, agent_tools="")
    async with running(settings) as (app, gateway):
        customer = await create_customer(gateway, name="acme")
        first, one = await create_key(gateway, name="one", customer_id=customer["id"])
        second, two = await create_key(gateway, name="two", customer_id=customer["id"])
        refused = None
        for n in range(20):
            _, ended = await say(gateway, one if n % 2 else two, f"persona-{n % 3}")
            if ended[0]["type"] == "error":
                refused = ended[0]
                break
        assert refused is not None and refused["code"] == "agent_budget_exceeded"
        used = await records(gateway, app, customer_id=customer["id"])
        assert tokens(used) <= 100
        assert {r["key_id"] for r in used} == {first["id"], second["id"]}
        # Another tenant is untouched.
        other = await create_customer(gateway, name="globex")
        _, value = await create_key(gateway, name="three", customer_id=other["id"])
        _, fine = await say(gateway, value, None)
        assert fine[-2]["type"] == "message"


async def test_sessions_without_a_persona_count_as_default_after_a_restart(make_settings):
    settings = make_settings(
        agent_persona_token_budgets={"default": 60}, agent_max_tokens=16, agent_tools=""
    )
    async with running(settings) as (app, gateway):
        customer = await create_customer(gateway, name="acme")
        key, value = await create_key(gateway, name="agent", customer_id=customer["id"])
        session_id, ended = None, []
        for _ in range(10):
            session_id, ended = await say(gateway, value, None, session_id)
            if ended[0]["type"] == "error":
                break
        assert ended[0]["code"] == "agent_budget_exceeded"
        used = await records(gateway, app, key_id=key["id"])
        assert used and {r["persona_id"] for r in used} == {None}
    async with running(settings) as (app, gateway):
        _, after = await say(gateway, value, None, session_id)
        assert f"{tokens(used)} of 60 tokens used" in after[0]["text"]
