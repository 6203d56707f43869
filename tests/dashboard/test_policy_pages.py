"""Policies through the dashboard's forms: the same write-time checks as the admin API
(an invalid condition refused next to the field, the text kept, nothing stored), the
same rows, a dry run answering what ``POST /api/policies/{id}/test`` answers, and the
viewer refused (in-process; the browser flows are in test_browser.py)."""

from __future__ import annotations

import html
import json

from tests.dashboard.conftest import ADMIN_KEY, VIEWER_KEY, csrf_of, log_in

ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
BASE = {"action": "llm.request", "effect": "deny", "engine": "cel", "priority": "10",
        "fail_mode": "closed", "enabled": "on"}  # fmt: skip


async def _post(ui, path: str, form: dict[str, str] | list[tuple[str, str]]):
    page = await ui.get("/ui/policies/new")
    data: dict[str, list[str]] = {"csrf": [csrf_of(page.text)]}
    for name, value in form.items() if isinstance(form, dict) else form:
        data.setdefault(name, []).append(value)  # a field posted twice: both values
    return await ui.post(path, data=data)


async def _policies(ui) -> list[dict]:
    listed = await ui.get("/api/policies", headers=ADMIN)
    assert listed.status_code == 200, listed.text
    return list(listed.json()["policies"])


async def test_an_invalid_condition_is_shown_next_to_it_and_nothing_is_stored(ui):
    await log_in(ui)
    for condition in (
        "request.modle == 'x'",  # an unknown field
        "request.model ==",  # does not parse
        "request.stream > 1",  # the wrong types
    ):
        body = {"name": "bad", "action": "llm.request", "effect": "deny",
                "condition": condition}  # fmt: skip
        api = await ui.post("/api/policies", json=body, headers=ADMIN)
        assert api.status_code == 400, api.text
        api_says = api.json()["error"]
        page = await _post(ui, "/ui/policies/new", {**BASE, "name": "bad", "condition": condition})
        assert page.status_code == 400, page.text[-1500:]
        # The API's message, next to the condition, and the text as it was typed.
        shown = html.unescape(page.text)
        assert f'data-testid="error-condition">{api_says}<' in shown
        assert f">{condition}</textarea>" in shown
    # A Rego module that does not parse: the same.
    rego = {**BASE, "name": "bad", "engine": "rego", "condition": "package x\nmatch if {"}
    page = await _post(ui, "/ui/policies/new", rego)
    assert page.status_code == 400 and 'data-testid="error-condition"' in page.text
    assert await _policies(ui) == []


async def test_a_policy_made_and_changed_through_the_form_is_what_the_api_shows(ui):
    await log_in(ui)
    team = await ui.post("/api/governance/teams", json={"name": "Interns"}, headers=ADMIN)
    team_id = team.json()["team"]["id"]
    condition = "request.model.startsWith('o1') &&\r\n  time.hour >= 18"  # a textarea's CRLF
    form = [*BASE.items(), ("name", "no-reasoning-late"), ("condition", condition),
            ("attach_owners", f"team:{team_id}"), ("attach_tags", "intern")]  # fmt: skip
    made = await _post(ui, "/ui/policies/new", form)
    assert made.status_code == 303, made.text[-1500:]
    policy_id = made.headers["location"].split("/")[-1].split("?")[0]
    (policy,) = await _policies(ui)
    assert policy["id"] == policy_id
    assert policy["condition"] == "request.model.startsWith('o1') &&\n  time.hour >= 18"
    assert policy["attachments"] == [{"type": "team", "id": team_id, "tag": None},
                                     {"type": "tag", "id": None, "tag": "intern"}]  # fmt: skip
    assert (policy["priority"], policy["effect"], policy["enabled"]) == (10, "deny", True)

    # The list shows it as the API does, the team by name.
    listing = await ui.get("/ui/policies")
    assert 'data-name="no-reasoning-late"' in listing.text
    assert "team Interns, tag intern" in listing.text and team_id not in listing.text

    # An edit with a bad priority is refused naming it; a good one is stored.
    edit = [*BASE.items(), ("name", "no-reasoning-late"), ("condition", "true"),
            ("priority", "high")]  # fmt: skip
    refused = await _post(ui, f"/ui/policies/{policy_id}", edit)
    assert refused.status_code == 400 and 'data-testid="error-priority"' in refused.text
    edit[-1] = ("priority", "-5")
    saved = await _post(ui, f"/ui/policies/{policy_id}", edit)
    assert saved.status_code == 303
    (policy,) = await _policies(ui)
    assert (policy["priority"], policy["condition"]) == (-5, "true")
    assert policy["attachments"] == [{"type": "global", "id": None, "tag": None}]

    # Disabled, enabled, deleted.
    off = await _post(ui, f"/ui/policies/{policy_id}/enable", {"enabled": "0"})
    assert off.status_code == 303 and (await _policies(ui))[0]["enabled"] is False
    on = await _post(ui, f"/ui/policies/{policy_id}/enable", {"enabled": "1"})
    assert on.status_code == 303 and (await _policies(ui))[0]["enabled"] is True
    gone = await _post(ui, f"/ui/policies/{policy_id}/delete", {})
    assert gone.status_code == 303 and await _policies(ui) == []


async def test_the_dry_run_answers_as_the_api_does(ui):
    await log_in(ui)
    body = {"name": "no-o1", "action": "llm.request", "effect": "deny",
            "condition": "request.model.startsWith('o1')"}  # fmt: skip
    made = await ui.post("/api/policies", json=body, headers=ADMIN)
    policy_id = made.json()["policy"]["id"]
    for given in ({"request": {"model": "o1-mini"}}, {"request": {"model": "gpt-4o"}}, {}):
        api = await ui.post(f"/api/policies/{policy_id}/test", json={"input": given},
                            headers=ADMIN)  # fmt: skip
        expected = api.json()
        page = await _post(ui, f"/ui/policies/{policy_id}/test", {"input": json.dumps(given)})
        assert page.status_code == 200, page.text[-1500:]
        assert f'data-testid="trial-outcome">{expected["outcome"]}<' in page.text
        matched = {True: "true", False: "false", None: "undefined"}[expected["matched"]]
        assert f'data-testid="trial-matched">{matched}<' in page.text
        seen = json.dumps(expected["input"], indent=2, sort_keys=True)
        assert seen in html.unescape(page.text)
    # Input that is not a JSON object: refused next to the field, the text kept.
    bad = await _post(ui, f"/ui/policies/{policy_id}/test", {"input": "{nope"})
    assert bad.status_code == 400 and 'data-testid="error-input"' in bad.text
    assert ">{nope</textarea>" in bad.text


async def test_the_viewer_sees_policies_and_cannot_change_them(ui):
    body = {"name": "seen", "action": "*", "effect": "allow"}
    made = await ui.post("/api/policies", json=body, headers=ADMIN)
    policy_id = made.json()["policy"]["id"]
    await log_in(ui, VIEWER_KEY)
    page = await ui.get(f"/ui/policies/{policy_id}")
    assert page.status_code == 200 and 'data-testid="policy-save"' not in page.text
    assert 'data-testid="policy-new"' not in (await ui.get("/ui/policies")).text
    token = csrf_of(page.text)
    for path, form in (
        ("/ui/policies/new", {**BASE, "name": "sneaky"}),
        (f"/ui/policies/{policy_id}", {**BASE, "name": "renamed"}),
        (f"/ui/policies/{policy_id}/enable", {"enabled": "0"}),
        (f"/ui/policies/{policy_id}/delete", {}),
    ):
        refused = await ui.post(path, data={"csrf": token, **form})
        assert refused.status_code == 403, (path, refused.text[:300])
    (policy,) = await _policies(ui)
    assert (policy["name"], policy["enabled"]) == ("seen", True)
    # A dry run changes nothing: the viewer may ask one (with the form's token).
    asked = await ui.post(f"/ui/policies/{policy_id}/test", data={"csrf": token, "input": "{}"})
    assert asked.status_code == 200 and 'data-testid="trial-run"' in asked.text
    forged = await ui.post(f"/ui/policies/{policy_id}/test", data={"input": "{}"})
    assert forged.status_code == 403
