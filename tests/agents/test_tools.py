"""Tool calls, end to end in one server (the conversation worker and the tool executor
in its process, the dev upstream as the model): "Calculate 2 + 2" runs the model's
``python`` call in a sandbox leased from the pool and the model answers with its output;
the ``tool.execute`` policy refuses a call with a result that says so; ``http_get`` is
held to its allow-list; a turn stops at its step limit; a call nobody answers times out;
every model call of a turn has its usage record."""

from __future__ import annotations

import contextlib
from decimal import Decimal

from tests.agents.test_worker import ask, turn
from tests.governance.helpers import auth, create_customer, create_key
from tests.policies.helpers import create_policy
from tests.sandboxes.helpers import seed
from tests.support import decode, records, running

from tollhouse.agents.setup import start_workers


async def results(gateway, key: str, session_id: str) -> list[dict]:
    page = decode(
        await gateway.get(
            f"/v1/session/{session_id}/events", params={"limit": "1000"}, headers=auth(key)
        )
    )
    return [e["event"] for e in reversed(page["events"]) if e["kind"] == "tool_result"]


async def agent_key(gateway) -> tuple[dict, str]:
    customer = await create_customer(gateway, name="acme")
    return await create_key(gateway, name="agent", customer_id=customer["id"])


async def test_calculate_runs_python_in_a_leased_sandbox(app, gateway):
    await seed(gateway, 1)
    key, value = await agent_key(gateway)
    session_id, turn_id = await ask(gateway, value, "Calculate 2 + 2")
    got = await turn(gateway, value, session_id, turn_id, seconds=20)
    call = next(e for e in got if e["type"] == "tool_call")
    assert call["tool"] == "python" and call["arguments"] == {"code": "print(2 + 2)"}
    [result] = await results(gateway, value, session_id)
    assert result["call_id"] == call["call_id"]
    assert result["ok"] is True and result["output"] == "4\n", result
    assert got[-2] == {**got[-2], "type": "message", "text": "The result is 4.", "step": 1}
    # Two model calls, both through the gateway with the session's key, both recorded.
    used = await records(gateway, app, key_id=key["id"])
    assert len(used) == 2
    assert got[-1]["usage"]["cost"] == str(sum(Decimal(r["cost"]) for r in used))
    # The sandbox is the session's: leased to its track, reused by its next call.
    leased = decode(await gateway.get("/api/sandboxes", params={"status": "allocated"}))
    assert [s["track_id"] for s in leased["sandboxes"]] == [f"session:{session_id}"]
    _, again = await ask(gateway, value, "Calculate 3 * 7", session_id)
    await turn(gateway, value, session_id, again, seconds=20)
    assert [r["output"] for r in await results(gateway, value, session_id)] == ["4\n", "21\n"]
    leased = decode(await gateway.get("/api/sandboxes", params={"status": "allocated"}))
    assert len(leased["sandboxes"]) == 1


async def test_a_denied_tool_call_is_answered_with_the_denial(app, gateway):
    await seed(gateway, 1)
    _, value = await agent_key(gateway)
    policy = await create_policy(
        gateway,
        name="no-code",
        action="tool.execute",
        effect="deny",
        condition='request.tool == "python"',
    )
    session_id, turn_id = await ask(gateway, value, "Calculate 2 + 2")
    got = await turn(gateway, value, session_id, turn_id, seconds=20)
    [result] = await results(gateway, value, session_id)
    assert result["ok"] is False and result["error"].startswith("policy_denied:")
    assert policy["name"] in result["error"]
    assert got[-2]["type"] == "message" and "policy_denied" in got[-2]["text"]
    # Nothing was leased for the refused call.
    leased = decode(await gateway.get("/api/sandboxes", params={"status": "allocated"}))
    assert leased["sandboxes"] == []


async def test_without_a_free_sandbox_the_call_fails_and_the_turn_ends(app, gateway):
    _, value = await agent_key(gateway)  # no sandbox seeded
    session_id, turn_id = await ask(gateway, value, "Calculate 1 + 1")
    got = await turn(gateway, value, session_id, turn_id, seconds=20)
    [result] = await results(gateway, value, session_id)
    assert result["ok"] is False and result["error"].startswith("pool_exhausted")
    assert got[-1]["type"] == "done"


async def test_http_get_reaches_allow_listed_hosts_only(make_settings, upstream):
    from tollhouse.agents.tools import Toolbox
    from tollhouse.policies.decide import ANONYMOUS

    settings = make_settings(agent_http_allow_hosts="127.0.0.1", agent_http_max_kb=1)
    toolbox = Toolbox(settings, broker=None)  # type: ignore[arg-type]
    try:
        models = {"url": f"{upstream.url}/v1/models"}
        fetched = await toolbox.run("http_get", models, "s", ANONYMOUS)
        assert fetched.ok and fetched.output.startswith("HTTP 200\n"), fetched
        refused = await toolbox.run("http_get", {"url": "http://localhost:1/"}, "s", ANONYMOUS)
        assert not refused.ok and "not in agent_http_allow_hosts" in refused.error
        wrong = await toolbox.run("http_get", {"url": "file:///etc/passwd"}, "s", ANONYMOUS)
        assert not wrong.ok and "http:// or https://" in wrong.error
        closed = await toolbox.run("http_get", {"url": "http://127.0.0.1:1/"}, "s", ANONYMOUS)
        assert not closed.ok and closed.error.startswith("request failed")
        echoed = await toolbox.run("echo", {"text": "hi"}, "s", ANONYMOUS)
        assert echoed.ok and echoed.output == "hi"
    finally:
        await toolbox.close()


async def test_a_turn_stops_at_its_step_limit(make_settings):
    async with running(make_settings(agent_max_steps=1)) as (app, gateway):
        await seed(gateway, 1)
        key, value = await agent_key(gateway)
        session_id, turn_id = await ask(gateway, value, "Calculate 2 + 2")
        got = await turn(gateway, value, session_id, turn_id, seconds=20)
        assert [e["type"] for e in got][-2:] == ["error", "done"]
        assert got[-2]["code"] == "step_limit"
        assert got[-1]["usage"]["completion_tokens"] > 0
        assert len(await records(gateway, app, key_id=key["id"])) == 1


async def test_a_call_nobody_answers_times_out(make_settings):
    settings = make_settings(agent_worker_in_process=False, agent_tool_timeout_s=0.5)
    async with running(settings) as (app, gateway), contextlib.AsyncExitStack() as stack:
        await start_workers(app.services, ("conversation",), stack)  # no tool executor
        _, value = await agent_key(gateway)
        session_id, turn_id = await ask(gateway, value, "Calculate 2 + 2")
        got = await turn(gateway, value, session_id, turn_id, seconds=20)
        [result] = await results(gateway, value, session_id)
        assert result["ok"] is False and result["error"].startswith("timeout:")
        assert got[-2]["type"] == "message" and "timeout" in got[-2]["text"]
