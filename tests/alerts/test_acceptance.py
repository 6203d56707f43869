"""The alert acceptance cases end to end, embedded (SQLite) and scaled out (Postgres +
Redis): exactly one email at 80 % and one at 100 % when 200 concurrent requests cross
both, and the next window alerts again."""

from __future__ import annotations

import asyncio
import time

import pytest
from tests.alerts.receivers import SmtpReceiver
from tests.governance.helpers import chat, create_key, usd, worst_case_nanos
from tests.support import running, scenario


@pytest.fixture
def settings(make_settings, both_deployments):
    return make_settings(
        **both_deployments,
        allow_anonymous=False,
        alert_poll_interval_s=0.05,
        alert_retry_base_s=0.01,
    )


async def settled(app) -> None:
    meter = app.services.admission.meter
    for _ in range(500):
        if meter.pending == 0:
            break
        await asyncio.sleep(0.01)
    await app.services.alerts.flush()


async def wait_for_mail(smtp: SmtpReceiver, count: int, limit_s: float = 10.0) -> None:
    deadline = time.monotonic() + limit_s
    while len(smtp.messages) < count:
        assert time.monotonic() < deadline, f"{len(smtp.messages)} of {count} emails"
        await asyncio.sleep(0.02)


async def email_channel(client, smtp: SmtpReceiver) -> str:
    config = {"host": "127.0.0.1", "port": smtp.port, "from": "alerts@example.test"}
    config["to"] = ["oncall@example.test"]
    body = {"name": "oncall", "type": "email", "config": config}
    response = await client.post("/api/notification-channels", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["notification_channel"]["id"])


async def test_200_concurrent_requests_send_one_email_per_threshold(settings, upstream):
    with SmtpReceiver() as smtp:
        async with running(settings) as (app, client):
            channel = await email_channel(client, smtp)
            budget = {"max_limit": usd(20 * worst_case_nanos()), "reset_duration": "1d"}
            _, value = await create_key(client, budget={**budget, "alert_channels": [channel]})
            scenario(upstream, latency_ms=20, count=200)

            responses = await asyncio.gather(*(chat(client, value) for _ in range(200)))

            assert {r.status_code for r in responses} == {200, 402}
            await settled(app)
            await wait_for_mail(smtp, 2)
            await asyncio.sleep(0.3)  # nothing else arrives
        subjects = sorted(str(m["Subject"]) for m in smtp.messages)
    assert len(subjects) == 2
    assert subjects[0].startswith("[Tollhouse] CRITICAL")
    assert "80 %" in subjects[1]


async def test_the_next_window_alerts_again(settings, upstream):
    with SmtpReceiver() as smtp:
        async with running(settings) as (app, client):
            channel = await email_channel(client, smtp)
            # A 2-second window holding three worst cases; thresholds at 50 % only.
            budget = {"max_limit": usd(3 * worst_case_nanos()), "reset_duration": "2s"}
            budget |= {"alert_thresholds": [0.5], "alert_channels": [channel]}
            _, value = await create_key(client, budget=budget)
            for window in range(2):
                while (await chat(client, value)).status_code == 200:
                    pass
                await settled(app)
                await wait_for_mail(smtp, window + 1)
                await asyncio.sleep(2.1)  # into the next window
        windows = {
            m.get_payload()[0].get_payload(decode=True).decode().split("Window:")[1].split("\n")[0]
            for m in smtp.messages
        }
    assert len(smtp.messages) == 2 and len(windows) == 2  # one per window, each its own
