"""The dashboard in headless Chromium against a real server on loopback: the flows an
operator runs, with no console error on any page and a screenshot of each."""

from __future__ import annotations

import csv
import io
import time
from decimal import Decimal
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect
from tests.dashboard.conftest import ADMIN_KEY, VIEWER_KEY, Tab
from tests.support import wait_for

# In a pytest process of their own (scripts/test): Playwright's sync API keeps an event
# loop of its own on the main thread, which later asyncio tests of the process must not meet.
pytestmark = [pytest.mark.slow, pytest.mark.browser]
ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}


def chat(base: str, key: str, content: str = "hello") -> httpx.Response:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}]}
    headers = {"authorization": f"Bearer {key}"}
    return httpx.post(f"{base}/v1/chat/completions", json=body, headers=headers, timeout=10)


def admin_api(base: str, method: str, path: str, **kwargs: Any) -> Any:
    response = httpx.request(method, f"{base}/api{path}", headers=ADMIN, timeout=10, **kwargs)
    assert response.status_code < 300, response.text
    return response.json()


def usage(base: str, **params: str) -> list[dict[str, Any]]:
    time.sleep(0.1)  # the ledger writes in batches (10 ms here)
    return list(admin_api(base, "GET", "/usage", params={"limit": "1000", **params})["usage"])


def test_login_and_logout(tab: Tab) -> None:
    page = tab.page
    page.goto("/ui/keys")
    expect(page).to_have_url("/ui/login?next=%2Fui%2Fkeys")
    tab.shot("login")
    page.get_by_test_id("login-key").fill("not-the-key-" + "x" * 30)
    page.get_by_test_id("login-submit").click()
    expect(page.get_by_test_id("error")).to_contain_text("wrong key")
    tab.errors.clear()  # the browser logs the 401 answer itself; nothing else may fail
    page.get_by_test_id("login-key").fill(ADMIN_KEY)
    page.get_by_test_id("login-submit").click()
    expect(page).to_have_url("/ui/keys")
    expect(page.get_by_test_id("role")).to_have_text("admin")
    page.get_by_test_id("logout").click()
    expect(page).to_have_url("/ui/login")
    page.goto("/ui")
    expect(page).to_have_url("/ui/login?next=%2Fui")


def test_create_edit_rotate_revoke_a_key(tab: Tab, live_ui: Any) -> None:
    page = tab.page
    tab.log_in()
    page.get_by_test_id("nav-keys").click()
    page.get_by_test_id("key-new").click()
    tab.shot("key-new")
    page.get_by_test_id("key-name").fill("browser key")
    page.get_by_test_id("budget-limit").fill("5")
    page.get_by_test_id("budget-duration").fill("1d")
    page.get_by_test_id("key-save").click()
    value = page.get_by_test_id("key-value").inner_text()
    tab.shot("key-created")
    assert chat(live_ui.url, value).status_code == 200

    # A bad edit is refused next to the form, naming the field; nothing changes.
    page.get_by_role("link", name="Back to the key").click()
    page.get_by_test_id("budget-duration").fill("")
    page.get_by_test_id("budget-limit").fill("-3")
    page.get_by_test_id("key-save").click()
    expect(page.get_by_test_id("error")).to_contain_text("budget.max_limit")
    tab.errors.clear()  # the 400 answer, logged by the browser
    tab.shot("key-invalid")
    page.get_by_test_id("budget-limit").fill("7.50")
    page.get_by_test_id("budget-duration").fill("1d")
    page.get_by_test_id("key-name").fill("browser key 2")
    page.get_by_test_id("key-save").click()
    expect(page.get_by_test_id("saved")).to_be_visible()
    tab.shot("key-saved")
    keys = admin_api(live_ui.url, "GET", "/governance/virtual-keys")["virtual_keys"]
    (key,) = [k for k in keys if k["name"] == "browser key 2"]
    assert Decimal(str(key["budget"]["max_limit"])) == Decimal("7.5")

    page.get_by_test_id("key-rotate").click()
    rotated = page.get_by_test_id("key-value").inner_text()
    assert rotated != value
    assert chat(live_ui.url, value).status_code == 401
    assert chat(live_ui.url, rotated).status_code == 200

    page.get_by_role("link", name="Back to the key").click()
    page.get_by_test_id("key-revoke").click()
    expect(page.get_by_test_id("key-revoke")).to_have_text("Reactivate")
    assert chat(live_ui.url, rotated).status_code == 403  # known, but inactive
    page.get_by_test_id("key-revoke").click()
    assert chat(live_ui.url, rotated).status_code == 200

    page.get_by_test_id("nav-keys").click()
    row = page.get_by_test_id("key-row").filter(has_text="browser key 2")
    expect(row.get_by_test_id("key-state")).to_have_text("active")
    tab.shot("keys")
    row.get_by_test_id("view-logs").click()
    expect(page.get_by_test_id("log-row")).to_have_count(3)  # three answered requests


def test_the_viewer_cannot_write(tab: Tab, live_ui: Any) -> None:
    made = admin_api(live_ui.url, "POST", "/governance/virtual-keys", json={"name": "seen"})
    page = tab.page
    tab.log_in(VIEWER_KEY)
    expect(page.get_by_test_id("role")).to_have_text("viewer")
    page.goto("/ui/keys")
    expect(page.get_by_test_id("key-row")).to_have_count(1)
    expect(page.get_by_test_id("key-new")).to_have_count(0)
    page.goto(f"/ui/keys/{made['virtual_key']['id']}")
    expect(page.get_by_test_id("key-save")).to_have_count(0)
    expect(page.get_by_test_id("key-rotate")).to_have_count(0)
    tab.shot("viewer-key")
    token = page.locator('input[name="csrf"]').first.get_attribute("value")
    response = page.request.post(
        f"/ui/keys/{made['virtual_key']['id']}/delete", form={"csrf": token or ""}
    )
    assert response.status == 403
    assert admin_api(live_ui.url, "GET", f"/governance/virtual-keys/{made['virtual_key']['id']}")


def test_a_budget_refusal_shows_in_the_log_and_the_overview(tab: Tab, live_ui: Any) -> None:
    body = {"name": "tight", "budget": {"max_limit": 0.000001, "reset_duration": "1d"}}
    made = admin_api(live_ui.url, "POST", "/governance/virtual-keys", json=body)
    refused = chat(live_ui.url, made["virtual_key"]["value"])
    assert refused.status_code == 402, refused.text
    page = tab.page
    tab.log_in()
    page.goto("/ui/logs")
    page.get_by_test_id("filter-status").select_option("refused")
    page.get_by_test_id("filter-submit").click()
    row = page.get_by_test_id("log-row")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("tight")
    row.click()
    expect(page.get_by_test_id("drawer")).to_contain_text("budget_exceeded")
    expect(page.get_by_test_id("drawer-cost")).to_have_text("$0")
    tab.shot("log-refusal")
    page.goto("/ui?range=24h")
    expect(page.get_by_test_id("tile-errors")).to_contain_text("1")
    expect(page.get_by_test_id("tile-requests")).to_contain_text("1")
    expect(page.locator("#chart canvas")).to_have_count(1)
    tab.shot("overview-refusal")


def test_csv_export_equals_the_ledger(tab: Tab, live_ui: Any) -> None:
    made = admin_api(live_ui.url, "POST", "/governance/virtual-keys", json={"name": "csv"})
    for n in range(7):
        assert chat(live_ui.url, made["virtual_key"]["value"], f"question {n}").status_code == 200
    ledger = usage(live_ui.url)
    tab.log_in()
    response = tab.page.request.get("/ui/logs.csv")
    assert response.status == 200
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text())))
    assert [r["id"] for r in rows] == [r["id"] for r in ledger]
    for exported, recorded in zip(rows, ledger, strict=True):
        assert Decimal(exported["cost"]) == Decimal(str(recorded["cost"]))
        assert int(exported["prompt_tokens"]) == recorded["prompt_tokens"]
        assert exported["created_at"] == recorded["created_at"]
        assert exported["key_name"] == "csv"


def test_the_live_tail_costs_one_request_per_refresh(tab: Tab, live_ui: Any) -> None:
    made = admin_api(live_ui.url, "POST", "/governance/virtual-keys", json={"name": "tail"})
    value = made["virtual_key"]["value"]
    assert chat(live_ui.url, value).status_code == 200
    page = tab.page
    tab.log_in()
    asked: list[str] = []
    page.on("request", lambda request: asked.append(request.url))
    page.goto("/ui/logs")
    page.get_by_test_id("tail-start").click()
    expect(page.get_by_test_id("log-row")).to_have_count(1)
    started = time.monotonic()
    for n in range(3):
        assert chat(live_ui.url, value, f"more {n}").status_code == 200
    expect(page.get_by_test_id("log-row")).to_have_count(4, timeout=15_000)
    page.wait_for_timeout(2_500)
    elapsed = time.monotonic() - started
    tab.shot("live-tail")
    refreshes = [url for url in asked if "/ui/logs/rows" in url]
    interval = live_ui.app.services.settings.dashboard_tail_interval_s
    assert 1 <= len(refreshes) <= elapsed / interval + 1, refreshes
    assert [url for url in asked if "/ui/logs/req_" in url] == []  # no detail per row


def test_every_page_renders_without_errors_at_desktop_and_phone_width(
    tab: Tab, live_ui: Any, browser: Any, screenshots: Any
) -> None:
    made = admin_api(live_ui.url, "POST", "/governance/virtual-keys", json={"name": "pages"})
    assert chat(live_ui.url, made["virtual_key"]["value"]).status_code == 200
    key_id = made["virtual_key"]["id"]
    session_id = open_session(live_ui.url, made["virtual_key"]["value"], "hello")
    pages = ["/ui", "/ui?range=30d&group=model", "/ui?range=24h&group=key&metric=requests",
             f"/ui?key={key_id}", "/ui/logs", f"/ui/logs?key_id={key_id}", "/ui/keys",
             "/ui/keys/new", f"/ui/keys/{key_id}", "/ui/teams", "/ui/teams/new",
             "/ui/customers", "/ui/customers/new",
             "/ui/policies", "/ui/policies/new", "/ui/sandboxes", "/ui/sessions",
             f"/ui/sessions/{session_id}"]  # fmt: skip
    owner = {"owner_type": "key", "owner_id": key_id}
    account_id = admin_api(live_ui.url, "POST", "/credits/accounts", json=owner)["account"]["id"]
    pages += ["/ui/alerts", "/ui/alerts/channels", "/ui/alerts/channels/new", "/ui/credits",
              f"/ui/credits/{account_id}"]  # fmt: skip
    tab.log_in()
    phone = Tab(browser, live_ui.url, screenshots, "phone", 375)
    try:
        phone.log_in()
        for path in pages:
            for each in (tab, phone):
                response = each.page.goto(path)
                assert response is not None and response.status == 200, path
                expect(each.page.locator("main h1")).to_be_visible()
                each.shot(path.strip("/").replace("/", "-").replace("?", "-")[:60] or "root")
        phone.page.goto("/ui/logs")
        phone.page.get_by_test_id("log-row").first.click()
        expect(phone.page.get_by_test_id("drawer")).to_be_visible()
        phone.shot("drawer")
        width = phone.page.evaluate("document.documentElement.scrollWidth")
        assert width <= 375 + 1, f"the page scrolls sideways at phone width ({width}px)"
        assert phone.errors == [], phone.errors
    finally:
        phone.close()


def test_alert_and_credit_pages(tab: Tab, live_ui: Any) -> None:
    """A budget refusal's alert in the history and its drawer; an email channel made and
    test-sent through the form; a prepaid account granted credit through its page."""
    body = {"name": "tight", "budget": {"max_limit": 0.000001, "reset_duration": "1d"}}
    made = admin_api(live_ui.url, "POST", "/governance/virtual-keys", json=body)
    assert chat(live_ui.url, made["virtual_key"]["value"]).status_code == 402
    customer = admin_api(live_ui.url, "POST", "/governance/customers", json={"name": "Acme"})
    owner = {"owner_type": "customer", "owner_id": customer["customer"]["id"]}
    account = admin_api(live_ui.url, "POST", "/credits/accounts", json=owner)
    page = tab.page
    tab.log_in()

    # Written off the request path: 80 % and 100 %, both reached by the refusal.
    wait_for(lambda: admin_api(live_ui.url, "GET", "/alerts")["count"] == 2, what="alerts")
    page.get_by_test_id("nav-alerts").click()
    expect(page.get_by_test_id("alert-scope")).to_have_text(["key tight", "key tight"])
    page.get_by_test_id("alert-row").filter(has_text="budget_crossed").click()
    expect(page.get_by_test_id("drawer")).to_contain_text("budget_crossed")
    expect(page.get_by_test_id("no-delivery")).to_be_visible()
    tab.shot("alerts")
    page.get_by_test_id("channels-link").click()
    page.get_by_test_id("channel-new").click()
    page.get_by_test_id("channel-name").fill("finance")
    page.get_by_test_id("channel-type").select_option("email")
    page.get_by_test_id("channel-to").fill("finance@example.com")
    page.get_by_test_id("channel-save").click()
    expect(page.get_by_test_id("saved")).to_be_visible()
    page.get_by_test_id("channel-test").click()
    expect(page.get_by_test_id("test-result")).to_contain_text("lacks settings")
    tab.shot("channel")
    page.get_by_role("link", name="All channels").click()
    expect(page.get_by_test_id("channel-row")).to_have_count(1)
    tab.shot("channels")

    page.get_by_test_id("nav-credits").click()
    page.get_by_test_id("credit-owner").filter(has_text="customer Acme").click()
    expect(page.get_by_test_id("stripe-missing")).to_be_visible()
    page.get_by_test_id("grant-amount").fill("7.250000001")
    page.get_by_test_id("grant-memo").fill("trial")
    page.get_by_test_id("grant-submit").click()
    expect(page.get_by_test_id("granted")).to_be_visible()
    expect(page.get_by_test_id("journal-amount")).to_have_text("$7.250000001")
    tab.shot("credit-account")
    got = admin_api(live_ui.url, "GET", f"/credits/accounts/{account['account']['id']}")
    assert Decimal(str(got["account"]["balance"]["total"])) == Decimal("7.250000001")
    page.get_by_test_id("nav-credits").click()
    expect(page.get_by_test_id("credit-row")).to_have_count(1)
    tab.shot("credits")


def open_session(base: str, key: str, message: str, session_id: str | None = None) -> str:
    body = {"message": message, **({"session_id": session_id} if session_id else {})}
    headers = {"authorization": f"Bearer {key}"}
    sent = httpx.post(f"{base}/v1/session/message", json=body, headers=headers, timeout=10)
    assert sent.status_code == 200, sent.text
    return str(sent.json()["session_id"])


def session_log(base: str, key: str, session_id: str, turns: int) -> list[dict[str, Any]]:
    """The session's events once ``turns`` turns are done (the API's read)."""
    headers = {"authorization": f"Bearer {key}"}
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        read = httpx.get(f"{base}/v1/session/{session_id}/events?limit=1000", headers=headers)
        found = list(reversed(read.json()["events"]))
        if sum(e["type"] == "done" for e in found) >= turns:
            return found
        time.sleep(0.05)
    raise AssertionError(f"session {session_id} did not finish {turns} turn(s)")


def test_a_session_page_receives_live_events_and_the_governance_pages(
    tab: Tab, live_ui: Any
) -> None:
    owner = admin_api(live_ui.url, "POST", "/governance/customers", json={"name": "Acme"})
    body = {"name": "agent", "customer_id": owner["customer"]["id"]}
    key = admin_api(live_ui.url, "POST", "/governance/virtual-keys", json=body)
    value = key["virtual_key"]["value"]
    session_id = open_session(live_ui.url, value, "hello")
    first = session_log(live_ui.url, value, session_id, turns=1)
    page = tab.page
    tab.log_in()
    page.get_by_test_id("nav-sessions").click()
    row = page.get_by_test_id("session-row")
    expect(row).to_have_count(1)
    expect(row.get_by_test_id("session-tenant")).to_have_text("customer Acme")
    tab.shot("sessions")
    row.get_by_role("link").first.click()
    rows = page.get_by_test_id("event-row")
    expect(rows).to_have_count(len(first))
    expect(page.get_by_test_id("stream-state")).to_have_text("Live: following new events")

    # A new message: its event and the reply arrive through EventSource, each once.
    open_session(live_ui.url, value, "and again", session_id)
    both = session_log(live_ui.url, value, session_id, turns=2)
    expect(rows).to_have_count(len(both))
    seqs = rows.evaluate_all("rows => rows.map(r => Number(r.dataset.seq))")
    assert seqs == [e["seq"] for e in both]
    expect(rows.filter(has_text="and again")).to_have_count(1)
    tab.shot("session-live")
    page.get_by_test_id("view-logs").click()
    expect(page.get_by_test_id("log-row")).to_have_count(2)  # one model call a turn

    # The policies and sandboxes pages, with something on them.
    admin_api(live_ui.url, "POST", "/sandboxes/seed", json={"count": 2})
    body = {"name": "no-o1", "action": "llm.request", "effect": "deny",
            "attachments": [{"type": "customer", "id": owner["customer"]["id"]}],
            "condition": "request.model.startsWith('o1')"}  # fmt: skip
    policy = admin_api(live_ui.url, "POST", "/policies", json=body)["policy"]
    page.get_by_test_id("nav-policies").click()
    expect(page.get_by_test_id("policy-attachments")).to_have_text("customer Acme")
    tab.shot("policies")
    page.goto(f"/ui/policies/{policy['id']}")
    page.get_by_test_id("policy-condition").fill("request.modle == 'o1'")
    page.get_by_test_id("policy-save").click()
    expect(page.get_by_test_id("error-condition")).to_contain_text("no field 'modle'")
    tab.errors.clear()  # the 400 answer, logged by the browser
    expect(page.get_by_test_id("policy-condition")).to_have_value("request.modle == 'o1'")
    tab.shot("policy-invalid")
    page.get_by_test_id("trial-input").fill('{"request": {"model": "o1-mini"}}')
    page.get_by_test_id("trial-run").click()
    expect(page.get_by_test_id("trial-outcome")).to_have_text("deny")
    tab.shot("policy-dry-run")
    page.get_by_test_id("nav-sandboxes").click()
    expect(page.get_by_test_id("sandbox-row")).to_have_count(2)
    expect(page.get_by_test_id("count-available")).to_have_text("2")
    tab.shot("sandboxes")
