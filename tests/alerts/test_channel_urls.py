"""Webhook and Slack URLs are credentials: encrypted at rest, answered redacted
(scheme and host, the rest masked), write-only like a channel's secret. Rows stored in
plaintext by an older version are encrypted at the first start or read with a key."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import insert, select
from tests.alerts.receivers import HttpReceiver
from tests.support import running

from tollhouse.alerts.models import notification_channels

API = "/api/notification-channels"
TOKEN = "T0K3N-b7f1c2d9e4a6"


@pytest.fixture
def settings(make_settings, both_stores):
    return make_settings(**both_stores, secret_key="channel-url-test-key-0123456789abcdef")


async def stored_rows(app) -> str:
    async with app.services.engine.connect() as conn:
        return repr((await conn.execute(select(notification_channels))).all())


def database_bytes(settings) -> bytes:
    url = settings.database_url
    if not url.startswith("sqlite"):
        return b""
    path = Path(url.split("///", 1)[1])
    return b"".join(p.read_bytes() for p in path.parent.glob(f"{path.name}*"))


@pytest.mark.parametrize(("kind", "field"), [("webhook", "url"), ("slack", "webhook_url")])
async def test_urls_are_encrypted_at_rest_and_answered_redacted(settings, kind, field):
    receiver = await HttpReceiver().start()
    secret_url = f"{receiver.url}?token={TOKEN}"
    masked = f"http://127.0.0.1:{receiver.port}/***"
    try:
        async with running(settings) as (app, client):
            made = await client.post(
                API, json={"name": "c", "type": kind, "config": {field: secret_url}}
            )
            assert made.status_code == 201, made.text
            channel = made.json()["notification_channel"]
            assert channel["config"][field] == masked
            answers = [
                made,
                await client.get(API),
                await client.get(f"{API}/{channel['id']}"),
                await client.put(f"{API}/{channel['id']}", json={"name": "renamed"}),
            ]
            for answer in answers:
                assert answer.status_code == 200 or answer is made
                assert TOKEN not in answer.text and "/hook" not in answer.text, answer.text
            assert TOKEN not in await stored_rows(app)
            # The kept URL still works after a merge that did not touch it.
            tried = await client.post(f"{API}/{channel['id']}/test")
            assert tried.json()["ok"] is True, tried.text
            assert receiver.requests, "the real URL was used"
            # A new URL replaces the old one, and is redacted too.
            moved = await client.put(
                f"{API}/{channel['id']}",
                json={"config": {field: f"https://hooks.example.test/{TOKEN}"}},
            )
            assert moved.json()["notification_channel"]["config"][field] == (
                "https://hooks.example.test/***"
            )
            assert TOKEN not in await stored_rows(app)
        assert TOKEN.encode() not in database_bytes(settings)
    finally:
        await receiver.stop()


async def test_a_url_without_a_secret_key_is_refused(make_settings):
    async with running(make_settings()) as (_, client):
        response = await client.post(
            API, json={"name": "c", "type": "webhook", "config": {"url": "https://x.test/h"}}
        )
    assert response.status_code == 400 and "TOLLHOUSE_SECRET_KEY" in response.text


async def test_plaintext_urls_of_an_older_version_are_encrypted_at_start(settings):
    receiver = await HttpReceiver().start()
    try:
        async with running(settings) as (app, _):
            now = datetime.now(UTC)
            async with app.services.engine.begin() as conn:
                await conn.execute(
                    insert(notification_channels).values(
                        id=str(uuid.uuid4()),
                        name="old",
                        type="webhook",
                        is_default=True,
                        config={"url": f"{receiver.url}?token={TOKEN}"},
                        created_at=now,
                        updated_at=now,
                    )  # fmt: skip
                )
        assert TOKEN in await _rows_after(settings)
        async with running(settings) as (app, client):
            assert TOKEN not in await stored_rows(app)  # sealed when the server started
            (channel,) = (await client.get(API)).json()["notification_channels"]
            assert channel["config"]["url"] == f"http://127.0.0.1:{receiver.port}/***"
            tried = await client.post(f"{API}/{channel['id']}/test")
            assert tried.json()["ok"] is True and receiver.requests
        assert TOKEN.encode() not in database_bytes(settings)
    finally:
        await receiver.stop()


async def _rows_after(settings) -> str:
    """The rows as stored, read without starting a server."""
    from tollhouse.db import create_engine

    engine = create_engine(settings)
    try:
        async with engine.connect() as conn:
            return repr((await conn.execute(select(notification_channels))).all())
    finally:
        await engine.dispose()


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://user:pw@hooks.example:8443/services/T/B?x=1", "https://hooks.example:8443/***"),
        ("http://[::1]/h", "http://[::1]/***"),
        ("http://h:99999/h", "http://h/***"),  # a port out of range: none shown
        ("http://[", "/***"),  # unparseable, as an older version may have stored it
    ],
)
def test_redaction_shows_scheme_host_and_port_only(url, shown):
    from tollhouse.alerts import urls

    assert urls.redact(url) == shown
