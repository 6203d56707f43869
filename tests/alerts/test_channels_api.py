"""``/api/notification-channels`` and ``/api/alerts``: CRUD, write-only secrets, checks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import select
from tests.alerts.receivers import HttpReceiver
from tests.alerts.test_events import alert as budget_alert
from tests.support import running

from tollhouse.alerts.events import record
from tollhouse.alerts.models import notification_channels

API = "/api/notification-channels"


@pytest.fixture
def settings(make_settings):
    return make_settings(secret_key="channels-test-key-0123456789abcdefghij")


async def create(gateway, body, status=201):
    response = await gateway.post(API, json=body)
    assert response.status_code == status, response.text
    return response.json()


async def test_crud_with_a_write_only_secret(app, gateway):
    made = await create(
        gateway,
        {
            "name": "ops",
            "type": "webhook",
            "config": {"url": "http://127.0.0.1:9/h"},
            "secret": "a-signing-secret-long-enough-to-never-appear-by-chance",
        },
    )
    channel = made["notification_channel"]
    assert channel["has_secret"] is True and "secret" not in channel
    async with app.services.engine.connect() as conn:
        stored = (await conn.execute(select(notification_channels.c.secret))).scalar_one()
    secret = "a-signing-secret-long-enough-to-never-appear-by-chance"
    assert secret not in stored and app.services.secret_box.decrypt(stored) == secret

    listed = (await gateway.get(API)).json()
    assert listed["count"] == 1 and "secret" not in listed["notification_channels"][0]
    updated = (await gateway.put(f"{API}/{channel['id']}", json={"is_default": True})).json()
    assert updated["notification_channel"]["is_default"] is True
    assert updated["notification_channel"]["has_secret"] is True  # untouched by the merge
    cleared = (await gateway.put(f"{API}/{channel['id']}", json={"secret": None})).json()
    assert cleared["notification_channel"]["has_secret"] is False
    assert (await gateway.delete(f"{API}/{channel['id']}")).status_code == 200
    assert (await gateway.get(f"{API}/{channel['id']}")).status_code == 404


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"type": "webhook", "config": {"url": "http://x/h"}}, "name"),
        ({"name": "n", "type": "pager", "config": {}}, "type"),
        ({"name": "n", "type": "webhook", "config": {"url": "ftp://x"}}, "config"),
        ({"name": "n", "type": "webhook", "config": {"url": "http://["}}, "config"),
        ({"name": "n", "type": "webhook", "config": {"url": "http://:80/h"}}, "config"),
        ({"name": "n", "type": "slack", "config": {"webhook_url": "https://h:99999/"}}, "config"),
        ({"name": "n", "type": "slack", "config": {}}, "config"),
        ({"name": "n", "type": "email", "config": {"to": []}}, "config"),
        (
            {
                "name": "n",
                "type": "email",
                "config": {"to": ["a@b"], "tls": True, "starttls": True},
            },
            "config",
        ),
        ({"name": "n", "type": "email", "config": {"to": ["a@b"], "port": 70000}}, "config"),
        ({"name": "n", "type": "webhook", "config": "x"}, "config"),
    ],
)
async def test_bad_channels_are_400_naming_the_field(gateway, body, param):
    response = await gateway.post(API, json=body)
    assert response.status_code == 400, response.text
    assert param in response.json()["error"], response.json()


async def test_a_secret_without_a_secret_key_is_refused(make_settings):
    async with running(make_settings()) as (_, client):
        body = {"name": "n", "type": "webhook", "config": {"url": "http://x/h"}, "secret": "s"}
        response = await client.post(API, json=body)
    assert response.status_code == 400 and "TOLLHOUSE_SECRET_KEY" in response.text


async def test_test_send_reaches_the_receiver_signed(gateway):
    receiver = await HttpReceiver(secret="whsec").start()
    try:
        body = {
            "name": "hook",
            "type": "webhook",
            "config": {"url": receiver.url},
            "secret": "whsec",
        }
        channel = (await create(gateway, body))["notification_channel"]
        result = (await gateway.post(f"{API}/{channel['id']}/test")).json()
        assert result["ok"] is True and result["status_code"] == 200
        assert receiver.verified == 1
    finally:
        await receiver.stop()


async def test_unknown_ids_are_404(gateway):
    assert (await gateway.get(f"{API}/nope")).status_code == 404
    assert (await gateway.put(f"{API}/nope", json={})).status_code == 404
    assert (await gateway.post(f"{API}/nope/test")).status_code == 404
    assert (await gateway.get("/api/alerts/nope/deliveries")).status_code == 404
    empty = {"alerts": [], "count": 0, "total": 0, "next_cursor": None}
    assert (await gateway.get("/api/alerts")).json() == empty


async def test_the_alert_history_is_paged_by_cursor_and_filtered(app, gateway):
    """Newest first, a page at a time without a skip or a repeat; filters by event and
    scope, with ``total`` counting what they select."""
    start = datetime(2026, 11, 1, tzinfo=UTC)
    async with app.services.engine.begin() as conn:
        for n in range(5):
            alert = budget_alert(
                budget_id=f"b{n}", scope_id="t1" if n % 2 else "t2",
                threshold=Decimal(1) if n == 4 else Decimal("0.8"),
            )  # fmt: skip
            assert await record(conn, alert, start + timedelta(minutes=n))
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = (await gateway.get("/api/alerts", params=params)).json()
        assert page["total"] == 5 and page["count"] == len(page["alerts"]) <= 2
        seen += [a["budget_id"] for a in page["alerts"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["b4", "b3", "b2", "b1", "b0"]
    one_scope = (await gateway.get("/api/alerts", params={"scope_id": "t1"})).json()
    assert [a["budget_id"] for a in one_scope["alerts"]] == ["b3", "b1"]
    assert one_scope["total"] == 2
    crossed = (await gateway.get("/api/alerts", params={"event": "budget_crossed"})).json()
    assert [a["budget_id"] for a in crossed["alerts"]] == ["b4"]
    bad = await gateway.get("/api/alerts", params={"cursor": "not-a-cursor"})
    assert bad.status_code == 400 and "cursor" in bad.json()["error"]


@pytest.mark.parametrize(
    ("secret", "later_key"),
    [(None, None), ("whsec", "an-unrelated-key-0123456789abcdefghijk")],
    ids=["key-removed", "key-replaced"],
)
async def test_test_send_with_an_unreadable_secret_is_409_naming_the_fix(
    make_settings, secret, later_key
):
    """A channel whose URL (and secret) were sealed with a key the server no longer has:
    the operator is told how to fix it, never a 5xx; stored again, it sends."""
    sealed_with = "channels-test-key-0123456789abcdefghij"
    body = {"name": "hook", "type": "webhook", "config": {"url": "http://127.0.0.1:9/h"}}
    async with running(make_settings(secret_key=sealed_with)) as (_, client):
        made = await create(client, {**body, "secret": secret} if secret else body)
    channel = f"{API}/{made['notification_channel']['id']}"
    async with running(make_settings(secret_key=later_key)) as (_, client):
        response = await client.post(f"{channel}/test")
        assert response.status_code == 409, response.text
        assert response.json()["code"] == "secret_unreadable"
        assert "TOLLHOUSE_SECRET_KEY" in response.json()["error"]
        if later_key is not None:
            again = await client.put(channel, json={"config": body["config"], "secret": "s2"})
            assert again.status_code == 200, again.text
            sent = await client.post(f"{channel}/test")
            assert sent.status_code == 200, sent.text
            assert sent.json()["ok"] is False  # it was sent: nothing listens on port 9
