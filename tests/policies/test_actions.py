"""Each action has its own ``request`` and ``resource`` (docs/policies.md, *The input
document*): a condition is checked on write against the sample documents of its
policy's action — all three for ``*`` — so a field one action lacks is refused for it and
accepted for the action that has it. ``time`` is in ``policy_time_zone``."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import httpx
import pytest
from tests.governance.helpers import chat
from tests.policies.helpers import call, create_policy, refused
from tests.support import JSON_WRITES

from tollhouse.app import create_app
from tollhouse.config import Settings
from tollhouse.errors import ConfigError
from tollhouse.policies.decide import ANONYMOUS
from tollhouse.policies.document import (
    ACTIONS,
    document,
    moment,
    principal,
    samples,
    sandbox_request,
    sandbox_resource,
    tool_request,
    tool_resource,
)


def test_every_action_has_a_full_and_an_empty_sample_of_the_same_shape():
    for action in ACTIONS:
        full, empty = samples(action)
        assert full["action"] == empty["action"] == action
        for part in ("request", "resource"):
            assert full[part].keys() == empty[part].keys()
            for name, value in full[part].items():
                assert type(value) is type(empty[part][name]), (action, part, name)
                assert value != empty[part][name], (action, part, name)  # filled, then empty
    assert [doc["action"] for doc in samples("*")] == [a for a in ACTIONS for _ in "fe"]


@pytest.mark.parametrize(
    ("action", "condition"),
    [
        ("tool.execute", 'request.tool == "shell" && request.arguments.contains("rm -rf")'),
        ("tool.execute", 'resource.hosts.all(h, h in ["api.example.com"])'),
        ("tool.execute", 'resource.sandbox == "" && request.persona == "helper"'),
        ("sandbox.allocate", 'request.purpose == "lab" && request.lab_minutes > 240'),
        ("sandbox.allocate", 'resource.backend == "static" && request.track.startsWith("t")'),
        ("*", 'action == "llm.request" && request.model.startsWith("o1")'),
        ("*", '"intern" in principal.tags && time.hour >= 18'),
    ],
)
async def test_a_condition_reads_the_fields_of_its_action(gateway, action, condition):
    made = await create_policy(gateway, name="p", action=action, effect="deny", condition=condition)
    assert made["condition"] == condition


@pytest.mark.parametrize(
    ("action", "condition", "says"),
    [
        ("llm.request", 'request.tool == "shell"', "no field 'tool' (on a sample llm.request"),
        ("tool.execute", 'request.model == "gpt-4o"', "no field 'model' (on a sample tool"),
        ("sandbox.allocate", "resource.hosts.size() > 0", "no field 'hosts'"),
        ("tool.execute", "request.arguments.size() > 2 && request.arguments.url == 1", "CEL"),
        # ``*`` sees every action: a field only one of them has is refused ...
        ("*", 'request.model == "gpt-4o"', "no field 'model' (on a sample tool.execute"),
        ("*", "request.lab_minutes > 60", "(on a sample llm.request"),
    ],
)
async def test_a_field_the_action_lacks_is_refused_naming_the_action(
    gateway, action, condition, says
):
    error = await refused(
        gateway, {"name": "p", "action": action, "effect": "deny", "condition": condition}
    )
    assert error.startswith("condition: ") and says in error, error


async def test_rego_is_checked_against_its_actions_samples(gateway):
    # Rego reads a missing field as undefined: without a default, a rule over a field its
    # action does not have is undefined on the samples, and refused with the fix.
    body = {
        "name": "p",
        "effect": "deny",
        "engine": "rego",
        "condition": 'package tools\nmatch := input.request.tool == "shell"\n',
    }
    await create_policy(gateway, action="tool.execute", **body)
    error = await refused(gateway, {**body, "name": "q", "action": "llm.request"})
    assert "undefined" in error and "default match := false" in error, error


async def test_the_gate_decides_tool_calls_and_leases(app, gateway):
    await create_policy(
        gateway,
        name="allow-listed-hosts",
        action="tool.execute",
        effect="deny",
        condition='!resource.hosts.all(h, h in ["api.example.com"])',
    )
    await create_policy(gateway, name="tools", action="tool.execute", effect="allow")
    await create_policy(
        gateway,
        name="short-labs",
        action="sandbox.allocate",
        effect="allow",
        condition="request.lab_minutes <= 240",
    )
    gate = app.services.policies
    await app.services.admission.reload()

    def call_to(host: str) -> tuple[dict, dict]:
        request = tool_request(
            tool="http_get", arguments={"url": f"https://{host}/x"}, session="s", persona=""
        )
        return request, tool_resource(tool="http_get", hosts=[host], sandbox="")

    allowed = await gate.decide("tool.execute", ANONYMOUS, *call_to("api.example.com"))
    assert allowed.allowed and allowed.reason == "allowed by policy tools"
    denied = await gate.decide("tool.execute", ANONYMOUS, *call_to("evil.test"))
    assert not denied.allowed and denied.reason == "denied by policy allow-listed-hosts"

    def lease(minutes: int) -> tuple[dict, dict]:
        request = sandbox_request(track="t-1", purpose="lab", lab_minutes=minutes)
        return request, sandbox_resource(backend="local")

    assert (await gate.decide("sandbox.allocate", ANONYMOUS, *lease(120))).allowed
    long = await gate.decide("sandbox.allocate", ANONYMOUS, *lease(600))
    assert not long.allowed and "no allow policy matched (short-labs)" in long.reason
    # A request's decision is not touched by policies of other actions.
    assert app.services.policies.decider.policies.applicable("llm.request", ANONYMOUS).names == ()


async def test_the_dry_run_starts_from_the_empty_document_of_the_action(gateway):
    made = await create_policy(
        gateway,
        name="no-shell",
        action="tool.execute",
        effect="deny",
        condition='request.tool == "shell"',
    )
    found = await call(gateway, "POST", f"/{made['id']}/test", {"input": {"request": {}}})
    assert found["input"]["action"] == "tool.execute" and found["matched"] is False
    assert found["input"]["resource"] == {"tool": "", "hosts": [], "sandbox": ""}
    shell = {"request": {"tool": "shell"}}
    assert (await call(gateway, "POST", f"/{made['id']}/test", {"input": shell}))["matched"]

    anything = await create_policy(
        gateway, name="any", action="*", effect="deny", condition='action == "sandbox.allocate"'
    )
    path = f"/{anything['id']}/test"
    found = await call(gateway, "POST", path, {"input": {"action": "sandbox.allocate"}})
    assert found["matched"] is True and found["input"]["resource"] == {"backend": ""}
    found = await call(gateway, "POST", path, {"input": {}})  # ``*`` alone: a model request
    assert found["matched"] is False and found["input"]["action"] == "llm.request"


def test_tool_arguments_are_one_canonical_json_text():
    one = tool_request(tool="t", arguments={"b": [1, "é"], "a": None}, session="", persona="")
    other = tool_request(tool="t", arguments={"a": None, "b": [1, "é"]}, session="", persona="")
    assert one["arguments"] == other["arguments"] == '{"a":null,"b":[1,"é"]}'


def test_time_is_read_in_the_configured_zone():
    instant = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)  # 02:30 in Paris once DST began
    assert moment(instant) == {
        "now": "2026-03-29T00:30:00Z",
        "unix": 1774744200,
        "date": "2026-03-29",
        "hour": 0,
        "minute": 30,
        "weekday": 0,
    }
    paris = moment(instant, ZoneInfo("Europe/Paris"))
    assert paris["now"] == "2026-03-29T01:30:00+01:00" or paris["now"].endswith("+02:00")
    assert (paris["hour"], paris["unix"], paris["weekday"]) == (
        int(paris["now"][11:13]),
        1774744200,
        0,
    )
    tokyo = moment(datetime(2026, 11, 28, 20, 0, tzinfo=UTC), ZoneInfo("Asia/Tokyo"))
    assert (tokyo["date"], tokyo["hour"], tokyo["weekday"], tokyo["now"]) == (
        "2026-11-29",
        5,
        0,  # already Sunday there
        "2026-11-29T05:00:00+09:00",
    )
    # The document of "now" is in the zone asked for, not in whichever one came first.
    now_utc = document("llm.request", principal(), {}, {})["time"]
    now_tokyo = document("llm.request", principal(), {}, {}, zone=ZoneInfo("Asia/Tokyo"))["time"]
    assert now_utc["now"].endswith("Z") and now_tokyo["now"].endswith("+09:00")
    assert (now_tokyo["hour"] - now_utc["hour"]) % 24 == 9


def test_an_unknown_time_zone_is_refused_at_start(make_settings):
    with pytest.raises(ConfigError, match="policy_time_zone.*Mars/Olympus"):
        make_settings(policy_time_zone="Mars/Olympus")
    assert isinstance(make_settings(policy_time_zone="Asia/Tokyo"), Settings)


async def test_the_gateway_decides_in_its_time_zone(make_settings):
    """A whole app on Tokyo time: its conditions see Tokyo's hour and offset."""
    app = create_app(make_settings(policy_time_zone="Asia/Tokyo"))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(
            transport=transport, base_url="http://127.0.0.1", headers=JSON_WRITES
        ) as client:
            hour = datetime.now(ZoneInfo("Asia/Tokyo")).hour
            hours = f"[{hour}, {(hour + 1) % 24}]"  # the hour may turn during the test
            await create_policy(
                client,
                name="tokyo",
                effect="deny",
                condition=f'time.now.endsWith("+09:00") && time.hour in {hours}',
            )
            response = await chat(client, None)
            assert response.status_code == 403, response.text
            assert "denied by policy tokyo" in response.text


async def test_changing_the_action_checks_the_condition_again(gateway):
    made = await create_policy(gateway, name="p", effect="deny", condition="request.stream")
    error = (await call(gateway, "PUT", f"/{made['id']}", {"action": "tool.execute"}, 400))["error"]
    assert "no field 'stream' (on a sample tool.execute" in error, error
    assert (await call(gateway, "GET", f"/{made['id']}"))["policy"]["action"] == "llm.request"
