"""``/api/policies``: create, read, merge, delete; conditions compiled on write (an
invalid one is a 400 naming it, never a request-time error); attachments that name
nothing are refused; names are unique; the dry run and the impact estimate."""

from __future__ import annotations

import pytest
from tests.governance.helpers import chat, create_customer, create_key, create_team
from tests.policies.helpers import call, create_policy, refused
from tests.support import flushed


async def test_crud(gateway):
    made = await create_policy(
        gateway,
        name="no-reasoning-after-hours",
        description="interns stop at 18:00",
        effect="deny",
        condition='request.model.startsWith("o1") && time.hour >= 18',
        priority=10,
    )
    assert made["engine"] == "cel" and made["fail_mode"] == "closed" and made["enabled"]
    assert made["attachments"] == [{"type": "global", "id": None, "tag": None}]
    listed = await call(gateway, "GET")
    assert listed["count"] == 1 and listed["policies"][0]["id"] == made["id"]

    path = f"/{made['id']}"
    updated = (await call(gateway, "PUT", path, {"priority": 20, "enabled": False}))["policy"]
    assert (updated["priority"], updated["enabled"]) == (20, False)
    assert updated["condition"] == made["condition"]  # a merge keeps what is not sent
    assert (await call(gateway, "GET", path))["policy"]["priority"] == 20
    assert (await call(gateway, "GET", "", None))["count"] == 1
    await call(gateway, "DELETE", path)
    await call(gateway, "GET", path, status=404)
    await call(gateway, "DELETE", path, status=404)


async def test_listing_by_action_highest_priority_first(gateway):
    await create_policy(gateway, name="low", priority=-5)
    await create_policy(gateway, name="high", priority=5)
    await create_policy(gateway, name="tools", action="tool.execute")
    names = [p["name"] for p in (await call(gateway, "GET"))["policies"]]
    assert names == ["high", "tools", "low"]
    only = await call(gateway, "GET", "?action=llm.request")
    assert [p["name"] for p in only["policies"]] == ["high", "low"]


@pytest.mark.parametrize(
    ("condition", "says"),
    [
        ("request.model ==", "Syntax error"),
        ("nobody.knows == 1", "unknown variable 'nobody'"),
        ('request.modle == "gpt-4o"', "no field 'modle'"),
        ("request.stream > 1", "No such overload"),
        ("request.model", "not a boolean"),
        ('principal.tags[0] == "intern"', "index out of bounds"),
    ],
)
async def test_an_invalid_condition_is_a_400_naming_it(gateway, condition, says):
    error = await refused(
        gateway, {"name": "p", "action": "*", "effect": "deny", "condition": condition}
    )
    assert error.startswith("condition: ") and says in error, error
    assert (await call(gateway, "GET"))["count"] == 0  # nothing written


async def test_an_update_compiles_the_condition_it_will_have(gateway):
    made = await create_policy(gateway, name="p", condition="request.stream")
    error = (await call(gateway, "PUT", f"/{made['id']}", {"condition": "1 +"}, 400))["error"]
    assert error.startswith("condition: "), error
    # The engine alone changing recompiles too: a CEL expression is no Rego rule.
    error = (await call(gateway, "PUT", f"/{made['id']}", {"rule": "match"}, 400))["error"]
    assert error.startswith("rule: "), error
    assert (await call(gateway, "GET", f"/{made['id']}"))["policy"]["condition"] == "request.stream"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"effect": "allow"}, "name"),
        ({"name": "bad name!", "action": "*", "effect": "allow"}, "name"),
        ({"name": "p", "action": "llm.everything", "effect": "allow"}, "action"),
        ({"name": "p", "action": "*", "effect": "maybe"}, "effect"),
        ({"name": "p", "action": "*", "effect": "allow", "engine": "lua"}, "engine"),
        ({"name": "p", "action": "*", "effect": "allow", "priority": 10**6}, "priority"),
        ({"name": "p", "action": "*", "effect": "allow", "fail_mode": "sideways"}, "fail_mode"),
        ({"name": "p", "action": "*", "effect": "allow", "attachments": []}, "attachments"),
        (
            {"name": "p", "action": "*", "effect": "allow", "attachments": [{"type": "team"}]},
            "attachments",
        ),
        (
            {"name": "p", "action": "*", "effect": "allow", "attachments": [{"type": "tag"}]},
            "attachments",
        ),
        (
            {
                "name": "p",
                "action": "*",
                "effect": "allow",
                "attachments": [{"type": "team", "id": "team_nobody"}],
            },
            "attachments",
        ),
        ({"name": "p", "action": "*", "effect": "allow", "rule": "match"}, "rule"),
    ],
)
async def test_bad_policies_are_400_naming_the_field(gateway, body, param):
    error = await refused(gateway, body)
    assert param in error, error


async def test_names_are_unique(gateway):
    first = await create_policy(gateway, name="same")
    other = await create_policy(gateway, name="other")
    assert await refused(gateway, {"name": "same", "action": "*", "effect": "deny"}, 409)
    error = (await call(gateway, "PUT", f"/{other['id']}", {"name": "same"}, 409))["error"]
    assert "same" in error
    assert (await call(gateway, "GET", f"/{first['id']}"))["policy"]["name"] == "same"


async def test_attachments_name_what_exists(gateway):
    customer = await create_customer(gateway)
    team = await create_team(gateway, customer_id=customer["id"], tags=["research"])
    key, _ = await create_key(gateway, team_id=team["id"], tags=["intern", "intern"])
    assert key["tags"] == ["intern"] and team["tags"] == ["research"]
    attachments = [
        {"type": "customer", "id": customer["id"]},
        {"type": "team", "id": team["id"]},
        {"type": "key", "id": key["id"]},
        {"type": "tag", "tag": "intern"},
    ]
    made = await create_policy(gateway, name="p", attachments=attachments)
    assert [(a["type"], a["id"] or a["tag"]) for a in made["attachments"]] == [
        (a["type"], a.get("id") or a.get("tag")) for a in attachments
    ]


async def test_the_dry_run_judges_the_policy_alone(gateway):
    deny = await create_policy(
        gateway,
        name="after-hours",
        effect="deny",
        condition='"intern" in principal.tags && time.hour >= 18',
    )
    path = f"/{deny['id']}/test"
    late = {"principal": {"tags": ["intern"]}, "time": {"hour": 19}}
    found = await call(gateway, "POST", path, {"input": late})
    assert (found["matched"], found["outcome"], found["error"]) == (True, "deny", None)
    assert found["input"]["request"]["model"] == "" and found["input"]["action"] == "llm.request"
    early = await call(gateway, "POST", path, {"input": {**late, "time": {"hour": 9}}})
    assert (early["matched"], early["outcome"]) == (False, "no match")
    wrong = await call(gateway, "POST", path, {"input": {**late, "time": {"hour": "nine"}}})
    assert wrong["outcome"] == "deny" and "overload" in wrong["error"]  # fails closed

    allow = await create_policy(gateway, name="gpt-only", condition='resource.provider == "openai"')
    found = await call(gateway, "POST", f"/{allow['id']}/test", {"input": {}})
    assert (found["matched"], found["outcome"]) == (False, "no match")
    await call(gateway, "POST", "/pol_nothing/test", {"input": {}}, 404)


async def test_the_dry_run_takes_a_real_keys_principal(gateway):
    team = await create_team(gateway, tags=["research"])
    key, _ = await create_key(gateway, team_id=team["id"], name="ada", tags=["intern"])
    made = await create_policy(
        gateway,
        name="p",
        effect="deny",
        condition='"research" in principal.tags && principal.key.name == "ada"',
    )
    found = await call(gateway, "POST", f"/{made['id']}/test", {"key_id": key["id"]})
    assert found["matched"] is True
    assert found["input"]["principal"]["tags"] == ["intern", "research"]
    assert found["input"]["principal"]["team"]["id"] == team["id"]
    await call(gateway, "POST", f"/{made['id']}/test", {"key_id": "vk_nobody"}, 404)


async def test_impact_replays_the_latest_requests(gateway, app):
    _, intern = await create_key(gateway, name="intern", tags=["intern"])
    _, staff = await create_key(gateway, name="staff")
    for value in (intern, intern, staff):
        assert (await chat(gateway, value)).status_code == 200
    await flushed(app)
    made = await create_policy(
        gateway,
        name="no-interns",
        effect="deny",
        condition='"intern" in principal.tags',
        enabled=False,  # estimated before it is switched on
    )
    found = await call(gateway, "GET", f"/{made['id']}/impact")
    assert (found["evaluated"], found["matched"], found["would_deny"], found["errors"]) == (
        3,
        2,
        2,
        0,
    )
    assert len(found["examples"]) == 2
    assert (await call(gateway, "GET", f"/{made['id']}/impact?limit=1"))["evaluated"] == 1
    assert (await chat(gateway, intern)).status_code == 200  # disabled: not enforced
