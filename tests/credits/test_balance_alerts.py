"""Balance alerts end to end: requests drain an account to ``credit_low`` and (on its
overdraft) ``credit_depleted``, a top-up brings ``credit_recovered`` — each once per
crossing, on one server and on two replicas (Postgres + Redis) checking side by side,
delivered signed to a real webhook receiver; an auto top-up's payment recovers the
account; email and Slack say what happened."""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from tests.alerts.receivers import HttpReceiver, SmtpReceiver
from tests.credits.books import grant as books_grant
from tests.credits.books import open_customer_account
from tests.credits.helpers import call, grant, open_account
from tests.credits.stripe_support import SECRET_KEY, SUCCESS_URL
from tests.governance.helpers import chat, create_customer, create_key, usd, worst_case_nanos
from tests.support import running, wait_until

from tollhouse.alerts.models import alert_events
from tollhouse.alerts.service import AlertService
from tollhouse.alerts.templates import render_email, render_slack
from tollhouse.credits import alerting
from tollhouse.credits.alerting import cross
from tollhouse.credits.models import credit_accounts
from tollhouse.credits.service import balance_of

HOOK_SECRET = "whsec_balance_alerts"


def alert_settings(make_settings: Any, **more: Any) -> Any:
    fields = {
        "allow_anonymous": False,
        "secret_key": "test-secret-key-0123456789abcdefghij",
        "alert_retry_base_s": 0.01,
        "alert_poll_interval_s": 0.05,
        "credits_sweep_interval_s": 3600,  # the tests run the watch's passes themselves
    }
    return make_settings(**fields | more)


async def webhook_channel(client: httpx.AsyncClient, receiver: HttpReceiver) -> None:
    body = {"name": "ops", "type": "webhook", "config": {"url": receiver.url}}
    body |= {"secret": HOOK_SECRET, "is_default": True}
    response = await client.post("/api/notification-channels", json=body)
    assert response.status_code == 201, response.text


async def checked(*apps: Any) -> None:
    """Every replica's usage written and its balance watch run, side by side, twice."""
    await asyncio.gather(*(app.services.recorder.flush() for app in apps))
    for _ in range(2):
        await asyncio.gather(*(app.services.balance_watch.run_once() for app in apps))
    await asyncio.gather(*(app.services.balance_watch.idle() for app in apps))


async def events(app: Any) -> list[Any]:
    async with app.services.engine.connect() as conn:
        query = select(alert_events).order_by(alert_events.c.created_at, alert_events.c.id)
        return [r for r in (await conn.execute(query)).all() if r.event.startswith("credit_")]


async def received(receiver: HttpReceiver, count: int, within: float = 10.0) -> list[Any]:
    """The first ``count`` payloads the receiver took (each event once), in order."""
    deadline = time.monotonic() + within
    while True:
        firsts: dict[str, Any] = {}
        for request in receiver.requests:
            firsts.setdefault(request.headers["Tollhouse-Event-Id"], request.json())
        if len(firsts) >= count:
            return list(firsts.values())
        assert time.monotonic() < deadline, f"{len(firsts)} of {count} alerts arrived"
        await asyncio.sleep(0.02)


async def drained_customer(client: httpx.AsyncClient, **account: Any) -> tuple[dict, dict, str]:
    owner = await create_customer(client, name="acme")
    _, key = await create_key(client, customer_id=owner["id"])
    funding = account.pop("funding")
    opened = await open_account(client, "customer", owner["id"], **account)
    await grant(client, opened["id"], str(funding))
    return owner, opened, key


async def drain(apps_clients: list[tuple[Any, Any]], key: str) -> int:
    """Requests from every replica in turn until the account refuses; how many passed."""
    for turn in range(100):
        _, client = apps_clients[turn % len(apps_clients)]
        status = (await chat(client, key)).status_code
        await checked(*(a for a, _ in apps_clients))
        if status == 402:
            return turn
        assert status == 200
    raise AssertionError("the account never ran dry")


def assert_once_per_crossing(rows: list[Any], expected: list[str]) -> None:
    assert [r.event for r in rows] == expected
    assert [r.dedup_key.rsplit(":", 1)[1] for r in rows] == [
        str(n) for n in range(1, len(expected) + 1)
    ]


async def test_drained_depleted_and_recovered_each_alert_once(make_settings, upstream):
    worst = usd(worst_case_nanos())
    settings = alert_settings(make_settings)
    receiver = await HttpReceiver(secret=HOOK_SECRET).start()
    try:
        async with running(settings) as (app, client):
            await webhook_channel(client, receiver)
            owner, account, key = await drained_customer(
                client, funding=5 * worst, low_balance=3 * worst, overdraft_limit=2 * worst
            )
            assert await drain([(app, client)], key) >= 5
            await grant(client, account["id"], "10")
            await checked(app)
            await checked(app)  # nothing more: the state is where the balance is

            rows = await events(app)
            assert_once_per_crossing(rows, ["credit_low", "credit_depleted", "credit_recovered"])
            sent = await received(receiver, 3)
            await asyncio.sleep(0.2)
            assert len({r.headers["Tollhouse-Event-Id"] for r in receiver.requests}) == 3
            assert receiver.verified == len(receiver.requests)
        low, depleted, recovered = sent
        assert [p["event"] for p in sent] == [r.event for r in rows]
        assert [p["event_id"] for p in sent] == [r.id for r in rows]
        assert [p["level"] for p in sent] == ["warning", "critical", "info"]
        for payload in sent:
            assert payload["account_id"] == account["id"]
            assert payload["customer_id"] == owner["id"] and payload["event_group"] == "customer"
            assert payload["scope"] == {"kind": "customer", "id": owner["id"], "name": "acme"}
            assert payload["low_balance"] == 3 * worst
            assert payload["overdraft_limit"] == 2 * worst
            assert payload["available"] == payload["balance"] - payload["reserved"]
        assert (low["previous_state"], low["state"], low["threshold"]) == ("ok", "low", 3 * worst)
        assert 0 < low["balance"] < 3 * worst
        assert (depleted["state"], depleted["threshold"]) == ("depleted", 0)
        assert -2 * worst <= depleted["balance"] <= 0
        assert "requests continue on the overdraft" in depleted["event_message"]
        assert (recovered["previous_state"], recovered["state"]) == ("depleted", "ok")
        assert recovered["threshold"] == 3 * worst and recovered["balance"] > 9
        assert recovered["event_message"].startswith(
            f"Credit account {account['id']} of customer 'acme' ({owner['id']}) has credit again"
        )
    finally:
        await receiver.stop()


async def test_two_replicas_alert_once_per_crossing(make_settings, pg_url, redis_url, upstream):
    worst = usd(worst_case_nanos())
    settings = alert_settings(make_settings, database_url=pg_url, redis_url=redis_url)
    receiver = await HttpReceiver(secret=HOOK_SECRET).start()
    try:
        async with contextlib.AsyncExitStack() as stack:
            group = [await stack.enter_async_context(running(settings)) for _ in range(2)]
            app, client = group[0]
            await webhook_channel(client, receiver)
            _, account, key = await drained_customer(
                client, funding=5 * worst, low_balance=3 * worst, overdraft_limit=2 * worst
            )
            await group[1][0].services.admission.reload()
            await drain(group, key)
            await grant(group[1][1], account["id"], "10")
            await checked(*(a for a, _ in group))
            # Every replica checks it again, side by side: nothing more.
            await asyncio.gather(
                *(a.services.balance_watch.check(account["id"]) for a, _ in group for _ in "xyz")
            )

            assert_once_per_crossing(
                await events(app), ["credit_low", "credit_depleted", "credit_recovered"]
            )
            sent = await received(receiver, 3)
            await asyncio.sleep(0.3)
            assert len({r.headers["Tollhouse-Event-Id"] for r in receiver.requests}) == 3
        assert [p["event"] for p in sent] == ["credit_low", "credit_depleted", "credit_recovered"]
    finally:
        await receiver.stop()


async def test_each_move_between_states_is_its_own_crossing(make_settings, upstream):
    settings = alert_settings(make_settings)
    async with running(settings) as (app, client):
        owner = await create_customer(client, name="acme")
        account = await open_account(client, "customer", owner["id"], low_balance=Decimal(5))
        await checked(app)
        assert await events(app) == []  # never funded: not "depleted"

        steps = [
            ("10", None),  # ok: no crossing
            ("-10", ("ok", "depleted", Decimal(0))),  # straight to depleted: that alert alone
            ("2", ("depleted", "low", Decimal(0))),  # above 0 again, still low
            ("10", ("low", "ok", Decimal(5))),  # above the low mark
        ]
        for amount, crossing in steps:
            body = {"category": "adjustment"} if amount.startswith("-") else {}
            await grant(client, account["id"], amount, **body)
            await checked(app)
            rows = await events(app)
            if crossing is None:
                assert rows == []
                continue
            previous, state, threshold = crossing
            payload = rows[-1].payload
            assert (payload["previous_state"], payload["state"]) == (previous, state)
            assert Decimal(payload["threshold"]) == threshold
        assert [r.event for r in await events(app)] == [
            "credit_depleted",
            "credit_recovered",
            "credit_recovered",
        ]
        # Raising the low mark above the balance is a crossing too (the update is a touch).
        await call(client, "PUT", f"/accounts/{account['id']}", {"low_balance": Decimal(50)})
        await checked(app)
        assert (await events(app))[-1].event == "credit_low"
        reply = (await call(client, "GET", f"/accounts/{account['id']}"))["account"]
        assert reply["alert_state"] == "low"


async def test_an_auto_top_up_recovers_the_account(
    make_settings, localstripe, upstream, sdk_customer_card
):
    worst = usd(worst_case_nanos())
    settings = alert_settings(
        make_settings,
        stripe_secret_key=SECRET_KEY,
        stripe_api_base=localstripe.url,
        stripe_success_url=SUCCESS_URL,
        stripe_max_network_retries=0,
    )
    customer, card = await sdk_customer_card()
    receiver = await HttpReceiver(secret=HOOK_SECRET).start()
    try:
        async with running(settings) as (app, client):
            await webhook_channel(client, receiver)
            auto = {"enabled": True, "threshold": 2 * worst, "amount": Decimal(10)}
            auto |= {"stripe_customer": customer, "stripe_payment_method": card}
            _, account, key = await drained_customer(
                client, funding=6 * worst, low_balance=4 * worst, auto_topup=auto
            )
            for _ in range(8):
                assert (await chat(client, key)).status_code == 200
                await checked(app)
            sent = await received(receiver, 2)
            topups = (await call(client, "GET", f"/accounts/{account['id']}/topups"))["topups"]
        assert [t["status"] for t in topups] == ["succeeded"]
        assert [p["event"] for p in sent] == ["credit_low", "credit_recovered"]
        assert sent[1]["balance"] > 10
    finally:
        await receiver.stop()


@pytest.fixture
def sdk_customer_card(localstripe):
    async def make() -> tuple[str, str]:
        import stripe

        http = stripe.AIOHTTPClient()
        try:
            sdk = stripe.StripeClient(
                SECRET_KEY, base_addresses={"api": localstripe.url}, http_client=http
            )
            customer = str((await sdk.v1.customers.create_async({})).id)
            card = await sdk.v1.payment_methods.attach_async("pm_card_visa", {"customer": customer})
            return customer, str(card.id)
        finally:
            await http.close_async()

    return make


async def test_email_and_slack_say_what_happened(make_settings, upstream):
    settings = alert_settings(make_settings)
    with SmtpReceiver() as smtp:
        async with running(settings) as (app, client):
            config = {"host": "127.0.0.1", "port": smtp.port, "from": "alerts@example.test"}
            config["to"] = ["oncall@example.test"]
            body = {"name": "mail", "type": "email", "config": config, "is_default": True}
            assert (await client.post("/api/notification-channels", json=body)).status_code == 201
            owner = await create_customer(client, name="acme")
            account = await open_account(client, "customer", owner["id"])
            await grant(client, account["id"], "1")
            await grant(client, account["id"], "-1", category="adjustment")
            await checked(app)
            [row] = await events(app)
            deadline = time.monotonic() + 10
            while not smtp.messages:
                assert time.monotonic() < deadline, "no email arrived"
                await asyncio.sleep(0.02)
    [mail] = smtp.messages
    assert str(mail["Subject"]) == "[Tollhouse] CRITICAL: credit used up: customer 'acme'"
    text = mail.get_payload()[0].get_payload(decode=True).decode()
    assert "Balance:    0 USD (settled)" in text
    assert f"Account:    {account['id']}" in text
    assert "requests are refused until it is topped up" in text
    subject, _, html = render_email(row.payload)
    assert subject == str(mail["Subject"]) and "Credit used up" in html
    slack = render_slack(row.payload)
    assert slack["text"].startswith(":red_circle: Credit used up: Credit account")
    assert slack["blocks"][0]["text"]["text"] == "Credit used up: customer 'acme'"


async def test_committed_posts_alone_set_the_watch_going(make_settings, upstream):
    # No pass is run by hand and no scan is due: the usage recorder's batches are the cue.
    worst = usd(worst_case_nanos())
    async with running(alert_settings(make_settings)) as (app, client):
        _, account, key = await drained_customer(client, funding=5 * worst, low_balance=4 * worst)
        for _ in range(3):
            assert (await chat(client, key)).status_code == 200

        async def alerted() -> bool:
            return [r.event for r in await events(app)] == ["credit_low"]

        await wait_until(alerted, within=5, what="credit_low from the recorder's batches")
        assert app.services.balance_watch.crossings == 1


async def account_row(conn: Any, account_id: str) -> Any:
    return (
        await conn.execute(select(credit_accounts).where(credit_accounts.c.id == account_id))
    ).one()


async def test_a_state_already_where_the_balance_is_is_no_crossing(sqlite_engine):
    """``cross`` moves nothing and alerts nothing when the settled balance is in the state
    the account is in (a caller that did not ask ``stale`` first)."""
    engine, now = sqlite_engine, datetime.now(UTC)
    async with engine.begin() as conn:
        account_id = await open_customer_account(conn, "acme", low_balance=Decimal(5))
        await books_grant(conn, account_id, "10", now)
    sink = AlertService(engine)
    async with engine.begin() as conn:
        account = await account_row(conn, account_id)
        assert (account.alert_state, alerting.stale(account)) == ("ok", False)
        assert await cross(conn, account, balance_of(account, None), sink, now) is None
        assert (await account_row(conn, account_id)).alert_crossings == 0
    assert sink.written == 0


async def test_an_owner_of_a_kind_we_do_not_know_alerts_without_a_name(sqlite_engine):
    """A row whose owner type no table holds (written outside the API) still alerts."""
    engine, now = sqlite_engine, datetime.now(UTC)
    async with engine.begin() as conn:
        account_id = await open_customer_account(conn, "acme")
        await books_grant(conn, account_id, "1", now)
        await books_grant(conn, account_id, "-1", now, category="adjustment")
        await conn.execute(
            update(credit_accounts)
            .where(credit_accounts.c.id == account_id)
            .values(owner_type="org", owner_id="org_1")
        )
    sink = AlertService(engine)
    async with engine.begin() as conn:
        account = await account_row(conn, account_id)
        crossing = await cross(conn, account, balance_of(account, None), sink, now)
    assert crossing is not None and sink.written == 1
    assert (crossing.event, crossing.owner_type, crossing.owner_name) == (
        "credit_depleted",
        "org",
        None,
    )
    assert await owner_name_of(engine, "customer", "cus_none") is None


async def owner_name_of(engine: Any, owner_type: str, owner_id: str) -> str | None:
    async with engine.connect() as conn:
        return await alerting.owner_name(conn, owner_type, owner_id)
