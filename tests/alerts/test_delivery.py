"""Delivery against real receivers: retried until it lands, signed, once per event;
email over SMTP; a channel that never answers slows no inference request. Embedded
(SQLite) and scaled out (Postgres + Redis)."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime

import pytest
from sqlalchemy import insert, select
from tests.alerts.receivers import HttpReceiver, SmtpReceiver
from tests.governance.helpers import chat, create_key, usd, worst_case_nanos

from tollhouse.alerts.models import alert_attempts, alert_deliveries, notification_channels

SECRET = "whsec_delivery"


@pytest.fixture
def settings(make_settings, both_deployments):
    return make_settings(
        **both_deployments,
        allow_anonymous=False,
        secret_key="test-secret-key-0123456789abcdefghij",
        alert_retry_base_s=0.01,
        alert_retry_max_s=0.05,
        alert_poll_interval_s=0.05,
        alert_send_timeout_s=0.5,
        alert_max_attempts=6,
    )


async def add_channel(app, kind: str, config: dict, secret: str | None = None) -> str:
    channel_id = str(uuid.uuid4())
    token = app.services.secret_box.encrypt(secret) if secret else None
    now = datetime.now(UTC)
    async with app.services.engine.begin() as conn:
        await conn.execute(
            insert(notification_channels).values(
                id=channel_id,
                name=kind,
                type=kind,
                config=config,
                secret=token,
                is_default=False,
                created_at=now,
                updated_at=now,
            )  # fmt: skip
        )
    return channel_id


async def key_alerting_to(app, gateway, channel_ids: list[str], worst_cases: int = 4):
    budget = {"max_limit": usd(worst_cases * worst_case_nanos()), "reset_duration": "1d"}
    return await create_key(gateway, budget={**budget, "alert_channels": channel_ids})


async def until(check, limit_s: float = 10.0) -> None:
    deadline = time.monotonic() + limit_s
    while not await check():
        assert time.monotonic() < deadline, "not reached in time"
        await asyncio.sleep(0.02)


async def deliveries(app) -> list[tuple[str, int]]:
    async with app.services.engine.connect() as conn:
        rows = await conn.execute(select(alert_deliveries.c.status, alert_deliveries.c.attempts))
        return sorted((r.status, r.attempts) for r in rows)


async def spend_to_the_limit(gateway, value: str) -> None:
    while (await chat(gateway, value)).status_code == 200:
        pass


async def test_a_receiver_failing_three_times_gets_each_event_once_after_four_attempts(
    app, gateway, upstream
):
    receiver = await HttpReceiver(secret=SECRET, fail_first=3).start()
    try:
        channel = await add_channel(app, "webhook", {"url": receiver.url}, SECRET)
        _, value = await key_alerting_to(app, gateway, [channel])
        await spend_to_the_limit(gateway, value)
        await app.services.alerts.flush()

        async def done() -> bool:
            rows = await deliveries(app)
            return bool(rows) and all(status == "sent" for status, _ in rows)

        await until(done)
        rows = await deliveries(app)
        # 80 % and 100 %: each failed three times, then landed: four attempts each.
        assert [attempts for _, attempts in rows] == [4, 4], rows
        assert receiver.tries and set(receiver.tries.values()) == {4}
        assert receiver.verified == 2  # each event accepted once, signature checked
        accepted = [r.json()["event"] for r in receiver.requests if r.json()]
        assert sorted(set(accepted)) == ["budget_crossed", "threshold_crossed"]
        async with app.services.engine.connect() as conn:
            attempts = (await conn.execute(select(alert_attempts.c.ok))).scalars().all()
        assert sorted(attempts) == [False] * 6 + [True] * 2
    finally:
        await receiver.stop()


async def test_email_over_smtp_with_text_and_html(app, gateway, upstream):
    with SmtpReceiver() as smtp:
        config = {"host": "127.0.0.1", "port": smtp.port, "from": "alerts@example.test"}
        config["to"] = ["oncall@example.test"]
        channel = await add_channel(app, "email", config)
        _, value = await key_alerting_to(app, gateway, [channel])
        await spend_to_the_limit(gateway, value)
        await app.services.alerts.flush()

        async def two() -> bool:
            return len(smtp.messages) == 2

        await until(two)
    subjects = sorted(m["Subject"] for m in smtp.messages)
    assert subjects[0].startswith("[Tollhouse] CRITICAL")
    assert "80 %" in subjects[1] or "0.8" in subjects[1] or "80" in subjects[1]
    message = smtp.messages[0]
    kinds = sorted(part.get_content_type() for part in message.walk() if not part.is_multipart())
    assert kinds == ["text/html", "text/plain"]
    assert message["To"] == "oncall@example.test"


async def test_an_unconfigured_channel_logs_a_preview(app, gateway, upstream, caplog):
    channel = await add_channel(app, "email", {"to": ["nobody@example.test"]})
    _, value = await key_alerting_to(app, gateway, [channel])
    await spend_to_the_limit(gateway, value)
    await app.services.alerts.flush()

    async def sent() -> bool:
        rows = await deliveries(app)
        return bool(rows) and all(status == "sent" for status, _ in rows)

    await until(sent)
    previews = [r for r in caplog.records if "preview" in r.getMessage()]
    assert previews and "Subject: [Tollhouse]" in previews[0].__dict__["preview"]


async def test_a_channel_that_never_answers_does_not_slow_inference(app, gateway, upstream):
    receiver = await HttpReceiver(hang=True).start()
    try:
        channel = await add_channel(app, "webhook", {"url": receiver.url})
        _, value = await key_alerting_to(app, gateway, [channel], worst_cases=400)
        # Cross 80 % early with few requests? Measure latency while deliveries hang.
        timings = []
        for _ in range(30):
            started = time.perf_counter()
            response = await chat(gateway, value)
            assert response.status_code == 200, response.text
            timings.append(time.perf_counter() - started)
        baseline = sorted(timings)[len(timings) // 2]
        await spend_to_the_limit(gateway, value)
        await app.services.alerts.flush()

        async def hanging() -> bool:
            return len(receiver.requests) >= 1

        await until(hanging)
        _, other = await create_key(gateway)
        during = []
        for _ in range(30):
            started = time.perf_counter()
            response = await chat(gateway, other)
            assert response.status_code == 200, response.text
            during.append(time.perf_counter() - started)
        median = sorted(during)[len(during) // 2]
        assert median < baseline * 3 + 0.005, (baseline, median)
    finally:
        await receiver.stop()
