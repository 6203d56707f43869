"""SMTP credentials never cross the wire in plaintext unless the channel opts in: with a
username, the email channel uses STARTTLS (or implicit TLS); a server without it fails
the send with a clear, recorded error and never sees AUTH."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from sqlalchemy import select
from tests.alerts.receivers import SmtpReceiver
from tests.support import running

from tollhouse.alerts.models import alert_attempts, alert_deliveries
from tollhouse.alerts.signing import sign

PASSWORD = "smtp-password-never-in-plaintext"
SECRET = "inbound-secret-0123456789abcdefghijkl"


@pytest.fixture
def settings(make_settings):
    return make_settings(
        secret_key="smtp-auth-test-key-0123456789abcdefghij",
        inbound_webhook_secret=SECRET,
        alert_poll_interval_s=0.05,
        alert_retry_base_s=0.01,
        alert_retry_max_s=0.02,
        alert_max_attempts=2,
    )


def email_channel(port: int, **config: object) -> dict[str, object]:
    return {
        "name": "mail",
        "type": "email",
        "secret": PASSWORD,
        "is_default": True,
        "config": {
            "host": "127.0.0.1",
            "port": port,
            "from": "alerts@example.test",
            "to": ["oncall@example.test"],
            "username": "alerts",
            **config,
        },
    }


async def test_credentials_without_tls_are_refused_and_recorded(settings):
    with SmtpReceiver(auth=True) as smtp:
        async with running(settings) as (app, client):
            made = await client.post("/api/notification-channels", json=email_channel(smtp.port))
            assert made.status_code == 201, made.text
            channel_id = made.json()["notification_channel"]["id"]
            tried = (await client.post(f"/api/notification-channels/{channel_id}/test")).json()
            assert tried["ok"] is False and "STARTTLS" in tried["error"], tried
            assert "allow_plaintext_auth" in tried["error"]

            raw = json.dumps(
                {
                    "spend": 1,
                    "max_budget": 2,
                    "event": "budget_crossed",
                    "event_group": "key",
                    "event_message": "m",
                }  # fmt: skip
            ).encode()
            headers = {"Tollhouse-Signature": sign(SECRET, raw)}
            assert (
                await client.post("/api/webhooks/budget", content=raw, headers=headers)
            ).status_code == 200
            deadline = time.monotonic() + 10
            while True:
                async with app.services.engine.connect() as conn:
                    status = (await conn.execute(select(alert_deliveries.c.status))).scalar()
                    errors = (await conn.execute(select(alert_attempts.c.error))).scalars().all()
                if status == "failed":
                    break
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
        assert len(errors) == 2 and all("STARTTLS" in (e or "") for e in errors), errors
        assert smtp.logins == [] and smtp.messages == []  # no AUTH, no mail


async def test_plaintext_auth_is_an_explicit_opt_in(settings):
    with SmtpReceiver(auth=True) as smtp:
        async with running(settings) as (_, client):
            body = email_channel(smtp.port, allow_plaintext_auth=True)
            made = await client.post("/api/notification-channels", json=body)
            assert made.status_code == 201, made.text
            channel = made.json()["notification_channel"]
            assert channel["config"]["allow_plaintext_auth"] is True
            tried = await client.post(f"/api/notification-channels/{channel['id']}/test")
            assert tried.json()["ok"] is True, tried.text
        assert smtp.logins == [("alerts", PASSWORD)] and len(smtp.messages) == 1
