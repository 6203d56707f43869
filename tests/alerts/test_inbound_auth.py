"""``POST /api/webhooks/budget``: the signature header as hostile input, and replays."""

from __future__ import annotations

import json
import time

import pytest
from sqlalchemy import func, select
from tests.alerts.test_inbound import LITELLM_EVENT, SECRET, URL
from tests.support import running

from tollhouse.alerts.models import alert_events
from tollhouse.alerts.signing import sign, signature


@pytest.fixture
def settings(make_settings):
    return make_settings(inbound_webhook_secret=SECRET, admin_failures_per_minute=50)


async def stored(app) -> int:
    async with app.services.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(alert_events))).scalar())


def _now() -> int:
    return int(time.time())


@pytest.mark.parametrize(
    "header",
    [
        "t=²³,v1=" + "0" * 64,  # unicode digits pass str.isdigit()
        "t=١٢٣,v1=" + "0" * 64,
        "t={now},v1=" + "é" * 64,  # non-ASCII signature
        "t={now},v1=" + "0" * 63,
        "t={now},v1=" + "z" * 64,
        f"t={'9' * 400},v1=" + "0" * 64,
        "t={now}," + ",".join(["v1=" + "0" * 64] * 40),
        "t=,v1=",
        ",,,",
        "t=1=2,v1=3=4",
        "\x00",
    ],
)
async def test_malformed_signature_headers_are_401_not_500(app, gateway, header):
    body = json.dumps(LITELLM_EVENT).encode()
    # A fresh stamp, put in here: parameters must not change between xdist workers.
    header = header.replace("{now}", str(_now()))
    response = await gateway.post(
        URL, content=body, headers={"Tollhouse-Signature": header.encode("utf-8")}
    )
    assert response.status_code == 401, response.text
    assert response.json()["code"] == "invalid_signature"
    assert await stored(app) == 0


async def test_a_replay_with_another_event_id_is_a_duplicate(app, gateway):
    body = json.dumps(LITELLM_EVENT).encode()
    first = await gateway.post(
        URL, content=body, headers={"Tollhouse-Signature": sign(SECRET, body),
                                    "Tollhouse-Event-Id": "evt-1"})  # fmt: skip
    assert first.json()["status"] == "stored"
    # The event id header is not signed: an attacker replaying the captured request
    # within the tolerance can change it at will.
    replay = await gateway.post(
        URL, content=body, headers={"Tollhouse-Signature": sign(SECRET, body),
                                    "Tollhouse-Event-Id": "evt-2"})  # fmt: skip
    assert replay.json()["status"] == "duplicate"
    assert await stored(app) == 1


async def test_signature_failures_are_throttled(make_settings):
    settings = make_settings(inbound_webhook_secret=SECRET, admin_failures_per_minute=3)
    async with running(settings) as (_, client):
        body = json.dumps(LITELLM_EVENT).encode()
        bad = {"Tollhouse-Signature": f"t={_now()},v1={signature('guess', _now(), body)}"}
        for _ in range(3):
            assert (await client.post(URL, content=body, headers=bad)).status_code == 401
        good = {"Tollhouse-Signature": sign(SECRET, body)}
        blocked = await client.post(URL, content=body, headers=good)
    assert blocked.status_code == 429 and blocked.json()["code"] == "too_many_failures"
