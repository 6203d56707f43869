"""Alerts and notification channels through the dashboard (in-process): the channel
forms write what /api shows (URLs redacted, secrets write-only), test-send reaches a
real receiver, the history pages by cursor with each alert's deliveries in the drawer,
names instead of ids, bad input shown next to the form, and the viewer only looks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from tests.alerts.receivers import HttpReceiver
from tests.alerts.test_events import alert as budget_alert
from tests.dashboard.conftest import ADMIN_KEY, VIEWER_KEY, csrf_of, log_in
from tests.support import wait_until

from tollhouse.alerts.events import record
from tollhouse.alerts.history import AlertFilter, list_deliveries, list_events

ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}
CHANNELS = "/api/notification-channels"
SIGNING = "whsec-dashboard-signing-secret"


@pytest.fixture
def ui_settings(make_settings):
    """The dashboard's settings, with the key webhook URLs and secrets are sealed with,
    and deliveries retried fast."""
    return make_settings(
        admin_key=ADMIN_KEY, viewer_key=VIEWER_KEY, allow_anonymous=False,
        secret_key="dashboard-alerts-key-0123456789abcdefghij",
        alert_retry_base_s=0.01, alert_retry_max_s=0.02, alert_poll_interval_s=0.05,
        alert_send_timeout_s=2, alert_max_attempts=2,
    )  # fmt: skip


@pytest.fixture
async def receiver():
    endpoint = await HttpReceiver(secret=SIGNING).start()
    yield endpoint
    await endpoint.stop()


async def _post(ui, path: str, page: str, **form: str):
    shown = await ui.get(page)
    assert shown.status_code == 200, shown.text[:500]
    return await ui.post(path, data={"csrf": csrf_of(shown.text), **form})


async def _channel(ui, channel_id: str) -> dict:
    answer = await ui.get(f"{CHANNELS}/{channel_id}", headers=ADMIN)
    assert answer.status_code == 200, answer.text
    return dict(answer.json()["notification_channel"])


async def test_a_channel_made_changed_test_sent_and_deleted_through_the_forms(ui, receiver):
    await log_in(ui)
    new = "/ui/alerts/channels/new"
    made = await _post(ui, new, new, name="ops", type="webhook", url=receiver.url,
                       secret=SIGNING, is_default="on")  # fmt: skip
    assert made.status_code == 303, made.text[-1500:]
    channel_id = made.headers["location"].split("/")[-1].split("?")[0]
    api = await _channel(ui, channel_id)
    assert (api["name"], api["type"], api["is_default"], api["has_secret"]) == (
        "ops", "webhook", True, True)  # fmt: skip
    assert api["config"] == {"url": f"http://127.0.0.1:{receiver.port}/***"}

    # The list shows the target as the API redacts it, never the path or the secret.
    listed = await ui.get("/ui/alerts/channels")
    assert api["config"]["url"] in listed.text
    assert "/hook" not in listed.text and SIGNING not in listed.text

    # An edit that sends the redacted URL back keeps the stored one (the test send below
    # reaches the receiver), and a blank secret keeps the stored secret (it verifies).
    page = f"/ui/alerts/channels/{channel_id}"
    shown = await ui.get(page)
    assert f'value="{api["config"]["url"]}"' in shown.text and SIGNING not in shown.text
    edited = await _post(ui, page, page, name="ops-renamed", type="webhook",
                         url=api["config"]["url"], secret="")  # fmt: skip
    assert edited.status_code == 303
    after = await _channel(ui, channel_id)
    assert after["name"] == "ops-renamed" and after["is_default"] is False
    assert after["has_secret"] is True and after["config"] == api["config"]

    sent = await _post(ui, f"{page}/test", page)
    assert sent.status_code == 200
    assert 'data-testid="test-result"' in sent.text and "Test alert sent (answer 200)" in sent.text
    assert receiver.verified == 1 and receiver.requests[0].json()["test"] is True

    gone = await _post(ui, f"{page}/delete", page)
    assert gone.status_code == 303 and gone.headers["location"] == "/ui/alerts/channels?deleted=1"
    assert (await ui.get(f"{CHANNELS}/{channel_id}", headers=ADMIN)).status_code == 404
    assert (await ui.get(page)).status_code == 404


async def test_a_failed_test_send_says_why(ui):
    await log_in(ui)
    new = "/ui/alerts/channels/new"
    made = await _post(ui, new, new, name="nowhere", type="webhook", url="http://127.0.0.1:9/h")
    page = made.headers["location"].split("?")[0]
    sent = await _post(ui, f"{page}/test", page)
    assert sent.status_code == 200 and "Test send failed" in sent.text


async def test_invalid_channels_are_shown_next_to_the_form_and_nothing_is_written(ui):
    await log_in(ui)
    new = "/ui/alerts/channels/new"
    for form, field in (
        ({"name": "", "type": "webhook", "url": "http://127.0.0.1:9/h"}, "name"),
        ({"name": "n", "type": "pager"}, "type"),
        ({"name": "n", "type": "webhook", "url": "ftp://example.com/h"}, "config.url"),
        ({"name": "n", "type": "slack"}, "config.webhook_url"),
        ({"name": "n", "type": "email", "host": "smtp.example.com"}, "config.to"),
        ({"name": "n", "type": "email", "to": "a@example.com", "port": "x"}, "config.port"),
        ({"name": "n", "type": "email", "to": "a@example.com", "tls": "on", "starttls": "on"},
         "config"),
    ):  # fmt: skip
        response = await _post(ui, new, new, **form, secret="typed-secret-never-echoed")
        assert response.status_code == 400, (form, response.text[-800:])
        assert f"<strong>{field}" in response.text, (field, response.text[-1500:])
        assert "typed-secret-never-echoed" not in response.text
        if form.get("host"):
            assert 'value="smtp.example.com"' in response.text  # what was typed is kept
    assert (await ui.get(CHANNELS, headers=ADMIN)).json()["count"] == 0


async def test_the_history_shows_names_pages_by_cursor_and_opens_the_deliveries(
    ui, ui_app, receiver
):
    await log_in(ui)
    team = await ui.post("/api/governance/teams", headers=ADMIN, json={"name": "Research"})
    team_id = team.json()["team"]["id"]
    new = "/ui/alerts/channels/new"
    for name, url in (("good", receiver.url), ("broken", "http://127.0.0.1:9/h")):
        made = await _post(ui, new, new, name=name, type="webhook", url=url, is_default="on",
                           secret=SIGNING)  # fmt: skip
        assert made.status_code == 303
    start = datetime(2026, 11, 1, tzinfo=UTC)
    engine = ui_app.services.engine
    async with engine.begin() as conn:
        for n in range(52):
            alert = budget_alert(budget_id=f"b{n}", scope_id=team_id, scope_name="old name",
                                 threshold=Decimal(1) if n == 51 else Decimal("0.8"))  # fmt: skip
            assert await record(conn, alert, start + timedelta(minutes=n))
    ui_app.services.alerts.wake()

    first = await ui.get("/ui/alerts")
    assert first.status_code == 200
    assert first.text.count('data-testid="alert-row"') == 50
    assert "team Research" in first.text and "old name" not in first.text
    older = first.text.split('href="/ui/alerts?')[1].split('"')[0].replace("&amp;", "&")
    second = await ui.get(f"/ui/alerts?{older}")
    assert second.text.count('data-testid="alert-row"') == 2
    assert 'data-testid="older"' not in second.text

    # One filter, as the API reads it; a bad cursor is refused naming it.
    crossed = await ui.get("/ui/alerts?event=budget_crossed")
    assert crossed.text.count('data-testid="alert-row"') == 1
    bad = await ui.get("/ui/alerts?cursor=nope")
    assert bad.status_code == 400 and "<strong>cursor" in bad.text

    # The newest alert's drawer: each channel's delivery once the dispatcher is done.
    async with engine.connect() as conn:
        (newest,), _ = await list_events(conn, AlertFilter(), 1)

    async def settled() -> bool:
        async with engine.connect() as conn:
            found = await list_deliveries(conn, newest.id)
        return all(row.status != "pending" for row, _ in found)

    await wait_until(settled, within=10, what="both deliveries settled")
    drawer = await ui.get(f"/ui/alerts/{newest.id}", headers={"hx-request": "true"})
    assert drawer.status_code == 200 and 'data-testid="drawer"' in drawer.text
    assert "budget_crossed" in drawer.text and "team Research" in drawer.text
    rows = drawer.text.split('data-testid="delivery"')[1:]
    by_channel = {r.split('data-testid="delivery-channel">')[1].split("<")[0]: r for r in rows}
    assert set(by_channel) == {"good", "broken"}
    assert 'data-testid="delivery-status">sent<' in by_channel["good"]
    assert 'data-testid="delivery-status">failed<' in by_channel["broken"]
    assert (
        "2 attempts" in by_channel["broken"]
        and 'data-testid="delivery-error"' in (by_channel["broken"])
    )
    assert (await ui.get("/ui/alerts/no-such-alert")).status_code == 404


async def test_the_viewer_sees_the_alert_pages_and_cannot_write(ui, receiver):
    made = await ui.post(
        CHANNELS, headers=ADMIN,
        json={"name": "seen", "type": "webhook", "config": {"url": receiver.url}},
    )  # fmt: skip
    channel_id = made.json()["notification_channel"]["id"]
    await log_in(ui, VIEWER_KEY)
    listed = await ui.get("/ui/alerts/channels")
    assert listed.status_code == 200 and "seen" in listed.text
    assert 'data-testid="channel-new"' not in listed.text
    page = f"/ui/alerts/channels/{channel_id}"
    shown = await ui.get(page)
    assert 'data-testid="channel-save"' not in shown.text
    assert 'data-testid="channel-test"' not in shown.text
    assert (await ui.get("/ui/alerts")).status_code == 200
    token = csrf_of(shown.text)
    for path, form in (
        ("/ui/alerts/channels/new", {"name": "x", "type": "webhook", "url": receiver.url}),
        (page, {"name": "renamed", "type": "webhook"}),
        (f"{page}/test", {}),
        (f"{page}/delete", {}),
    ):
        refused = await ui.post(path, data={"csrf": token, **form})
        assert refused.status_code == 403, path
    assert receiver.requests == []
    assert (await _channel(ui, channel_id))["name"] == "seen"
