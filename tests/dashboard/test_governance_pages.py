"""Customers, teams and keys through the dashboard's forms: the same checks and the same
rows as the admin API, names shown instead of ids (in-process; the browser flows are in
test_browser.py)."""

from __future__ import annotations

from decimal import Decimal

from tests.dashboard.conftest import ADMIN_KEY, csrf_of, log_in

ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}


async def _post(ui, path: str, **form: str):
    page = await ui.get(
        path if not path.endswith(("/delete", "/rotate", "/revoke")) else "/ui/keys"
    )
    return await ui.post(path, data={"csrf": csrf_of(page.text), **form})


async def test_a_customer_a_team_and_a_key_made_and_changed_through_the_forms(ui):
    await log_in(ui)
    made = await _post(ui, "/ui/customers/new", name="Acme", budget_max_limit="100",
                       budget_reset_duration="1M")  # fmt: skip
    assert made.status_code == 303
    customer_id = made.headers["location"].split("/")[-1].split("?")[0]
    team_form = {"name": "Research", "customer_id": customer_id, "tags": "gpu, eu",
                 "request_max_limit": "60", "request_reset_duration": "1m"}  # fmt: skip
    made = await _post(ui, "/ui/teams/new", **team_form)
    assert made.status_code == 303
    team_id = made.headers["location"].split("/")[-1].split("?")[0]
    key = await _post(ui, "/ui/keys/new", name="ci", parent=f"team:{team_id}",
                      allowed_models="gpt-4o-mini", is_active="on")  # fmt: skip
    assert key.status_code == 200

    api = (await ui.get("/api/governance/teams", headers=ADMIN)).json()["teams"]
    (team,) = api
    assert team["customer_id"] == customer_id and team["tags"] == ["gpu", "eu"]
    assert team["rate_limit"]["request_max_limit"] == 60
    keys = (await ui.get("/api/governance/virtual-keys", headers=ADMIN)).json()["virtual_keys"]
    assert keys[0]["team_id"] == team_id and keys[0]["allowed_models"] == ["gpt-4o-mini"]

    # Names, not ids, wherever an entity is shown.
    teams_page = await ui.get("/ui/teams")
    assert "Research" in teams_page.text and "Acme" in teams_page.text
    assert customer_id not in teams_page.text.replace(f"customer_id={customer_id}", "")
    keys_page = await ui.get("/ui/keys")
    assert "team Research" in keys_page.text

    # An edit: the budget raised, the rate limit removed (blank fields clear them).
    edited = await _post(ui, f"/ui/customers/{customer_id}", name="Acme Corp",
                         budget_max_limit="250.5", budget_reset_duration="1M")  # fmt: skip
    assert edited.status_code == 303
    customer = (await ui.get(f"/api/governance/customers/{customer_id}", headers=ADMIN)).json()
    assert customer["customer"]["name"] == "Acme Corp"
    assert Decimal(str(customer["customer"]["budget"]["max_limit"])) == Decimal("250.5")
    cleared = await _post(ui, f"/ui/teams/{team_id}", name="Research",
                          customer_id=customer_id)  # fmt: skip
    assert cleared.status_code == 303
    team = (await ui.get(f"/api/governance/teams/{team_id}", headers=ADMIN)).json()["team"]
    assert team["rate_limit"] is None and team["tags"] is None


async def test_invalid_input_is_shown_next_to_the_form_and_nothing_is_written(ui):
    await log_in(ui)
    for path, form, field in (
        ("/ui/customers/new", {"name": ""}, "name"),
        ("/ui/customers/new", {"name": "x", "budget_max_limit": "ten"}, "budget.max_limit"),
        ("/ui/customers/new", {"name": "x", "budget_max_limit": "10"}, "budget.reset_duration"),
        ("/ui/teams/new", {"name": "t", "customer_id": "nope"}, "customer_id"),
        (
            "/ui/teams/new",
            {"name": "t", "request_max_limit": "5"},
            "rate_limit.request_reset_duration",
        ),
        ("/ui/keys/new", {"name": "k", "max_parallel_requests": "-1"}, "max_parallel_requests"),
        ("/ui/keys/new", {"name": "k", "expires_at": "tomorrow"}, "expires_at"),
        ("/ui/keys/new", {"name": "k", "tags": "bad tag!"}, "tags"),
    ):
        response = await _post(ui, path, **form)
        assert response.status_code == 400, (path, form, response.text[:300])
        assert f"<strong>{field}" in response.text, (field, response.text[-1500:])
        # The form keeps what was typed.
        for value in form.values():
            if value:
                assert f'value="{value}"' in response.text or value in response.text
    for entity in ("customers", "teams", "virtual-keys"):
        listed = (await ui.get(f"/api/governance/{entity}", headers=ADMIN)).json()
        assert listed["count"] == 0


async def test_deleting_from_the_pages(ui):
    await log_in(ui)
    made = await _post(ui, "/ui/customers/new", name="Gone")
    customer_id = made.headers["location"].split("/")[-1].split("?")[0]
    page = await ui.get(f"/ui/customers/{customer_id}")
    gone = await ui.post(f"/ui/customers/{customer_id}/delete", data={"csrf": csrf_of(page.text)})
    assert gone.status_code == 303 and gone.headers["location"] == "/ui/customers?deleted=1"
    assert (await ui.get(f"/ui/customers/{customer_id}")).status_code == 404
    missing = await ui.get("/ui/teams/no-such-team")
    assert missing.status_code == 404 and "text/html" in missing.headers["content-type"]
