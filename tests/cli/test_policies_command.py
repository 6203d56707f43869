"""``tollhouse policies``: policies from the shell, checked as the admin API checks them
(conditions compiled on write), with the dry run, the impact estimate and the decision
log; writes bump the governance version so running servers apply them."""

from __future__ import annotations

import json
from typing import Any

from tests.cli.helpers import assert_ok

DENY_INTERNS = {
    "name": "no-interns",
    "action": "llm.request",
    "effect": "deny",
    "condition": "'intern' in principal.tags",
}


def as_json(result: Any) -> Any:
    assert_ok(result)
    return json.loads(result.output)


def test_create_list_show_update_delete(invoke, tmp_path):
    assert_ok(invoke("db", "upgrade"))
    assert "no policies" in invoke("policies", "list").output
    source = tmp_path / "policy.json"
    source.write_text(json.dumps(DENY_INTERNS))
    made = as_json(invoke("policies", "create", str(source), "--json"))
    assert (made["name"], made["engine"], made["fail_mode"]) == ("no-interns", "cel", "closed")
    listed = invoke("policies", "list")
    assert_ok(listed)
    assert "no-interns" in listed.output and made["id"] in listed.output
    shown = invoke("policies", "show", made["id"])
    assert "'intern' in principal.tags" in shown.output and "global" in shown.output
    updated = as_json(invoke("policies", "update", made["id"], '{"priority": 7}', "--json"))
    assert updated["priority"] == 7 and updated["condition"] == DENY_INTERNS["condition"]
    assert_ok(invoke("policies", "delete", made["id"]))
    missing = invoke("policies", "show", made["id"])
    assert missing.exit_code != 0 and "Policy not found" in missing.output


def test_an_invalid_condition_is_refused_naming_it(invoke):
    assert_ok(invoke("db", "upgrade"))
    bad = json.dumps({**DENY_INTERNS, "condition": "principal.tagz == 1"})
    result = invoke("policies", "create", bad)
    assert result.exit_code != 0 and "condition: CEL: no field 'tagz'" in result.output
    not_json = invoke("policies", "create", "{nope")
    assert not_json.exit_code != 0 and "not JSON" in not_json.output
    no_file = invoke("policies", "create", "missing.json")
    assert no_file.exit_code != 0 and "not a file" in no_file.output
    assert "no policies" in invoke("policies", "list").output


def test_dry_run_impact_and_an_empty_decision_log(invoke):
    assert_ok(invoke("db", "upgrade"))
    made = as_json(invoke("policies", "create", json.dumps(DENY_INTERNS), "--json"))
    late = invoke("policies", "test", made["id"], "--input", '{"principal": {"tags": ["intern"]}}')
    assert_ok(late)
    assert "matched: true" in late.output and "outcome: deny" in late.output
    other = as_json(invoke("policies", "test", made["id"], "--json"))
    assert (other["matched"], other["outcome"]) == (False, "no match")
    impact = invoke("policies", "impact", made["id"])
    assert_ok(impact)
    assert "would have denied 0 of the last 0 requests" in impact.output
    assert "no decisions logged" in invoke("policies", "decisions").output
    page = as_json(invoke("policies", "decisions", "--decision", "deny", "--json"))
    assert page == {"decisions": [], "count": 0, "next_cursor": None}
