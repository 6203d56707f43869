"""Auto top-ups end to end against localstripe: requests drain an account below its
threshold and the card is charged once, the credit booked once (and once more only in
name when localstripe's signed webhook arrives too); declines back off and the third in
a row turns auto top-up off with the reason; a card that needs its owner says so; the
monthly cap stops charges; two replicas on Postgres + Redis charge once; without Stripe
it is inert and says so at start."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx
import pytest
import stripe
from devtools.localstripe_server import LocalStripe
from sqlalchemy import func, insert, select, update
from sqlalchemy.exc import IntegrityError
from tests.credits.books import grant as books_grant
from tests.credits.books import open_customer_account, waiting_on_a_lock
from tests.credits.helpers import balance, call, entries, grant, open_account
from tests.credits.stripe_support import (
    SECRET_KEY,
    SUCCESS_URL,
    WEBHOOK_SECRET,
    Receiver,
    stripe_settings,
)
from tests.governance.helpers import chat, create_customer, create_key, usd, worst_case_nanos
from tests.support import engine_for, running, wait_until

from tollhouse.cli.processes import free_port
from tollhouse.credits import autotopup, payments
from tollhouse.credits.autotopup import AutoTopups
from tollhouse.credits.models import credit_topups, stripe_events
from tollhouse.credits.service import get_account
from tollhouse.credits.service import topups as topups_of
from tollhouse.credits.stripe import Payments

AMOUNT = Decimal("10.00")


def settings_for(make_settings: Any, api_base: str, **more: Any) -> Any:
    fields = {
        "allow_anonymous": False,
        "stripe_secret_key": SECRET_KEY,
        "stripe_webhook_secret": WEBHOOK_SECRET,
        "stripe_api_base": api_base,
        "stripe_success_url": SUCCESS_URL,
        "stripe_max_network_retries": 0,
        "credits_auto_topup_retry_s": 0,
        "credits_sweep_interval_s": 3600,  # the tests run the watch's passes themselves
    }
    return make_settings(**fields | more)


@pytest.fixture
async def sdk(localstripe: LocalStripe) -> AsyncIterator[stripe.StripeClient]:
    """The official SDK on localstripe, for what a payer's browser does (save a card)."""
    http = stripe.AIOHTTPClient()
    yield stripe.StripeClient(SECRET_KEY, base_addresses={"api": localstripe.url}, http_client=http)
    await http.close_async()


async def card_on_file(sdk: stripe.StripeClient, pm: str = "pm_card_visa") -> tuple[str, str]:
    """A Stripe customer and a card saved on it."""
    customer = str((await sdk.v1.customers.create_async({})).id)
    if pm.startswith("pm_card_chargeCustomerFail"):
        return customer, pm  # localstripe declines it without attaching
    card = await sdk.v1.payment_methods.attach_async(pm, {"customer": customer})
    return customer, str(card.id)


async def three_d_secure_card(sdk: stripe.StripeClient, customer: str) -> str:
    number = {"number": "4000002500003155", "exp_month": 12, "exp_year": 2030, "cvc": "123"}
    method = await sdk.v1.payment_methods.create_async({"type": "card", "card": number})
    attached = await sdk.v1.payment_methods.attach_async(str(method.id), {"customer": customer})
    return str(attached.id)


def charges(localstripe: LocalStripe) -> list[dict[str, Any]]:
    """Charges localstripe received (replays of one key included)."""
    return [r for r in localstripe.requests() if r["path"] == "/v1/payment_intents"]


async def checked(app: Any) -> None:
    """One pass of the balance watch now, and the top-ups it started, finished."""
    await app.services.recorder.flush()
    await app.services.balance_watch.run_once()
    await app.services.balance_watch.idle()


async def account_of(client: httpx.AsyncClient, account_id: str) -> dict[str, Any]:
    return dict((await call(client, "GET", f"/accounts/{account_id}"))["account"])


async def topups(client: httpx.AsyncClient, account_id: str) -> list[dict[str, Any]]:
    return list((await call(client, "GET", f"/accounts/{account_id}/topups"))["topups"])


async def funded_account(
    client: httpx.AsyncClient, customer: str, pm: str, funding: str, **auto: Any
) -> tuple[dict[str, Any], str]:
    """A customer with a key and a prepaid account with auto top-up on the card; the
    account and the key."""
    owner = await create_customer(client)
    _, key = await create_key(client, customer_id=owner["id"])
    auto = {
        "enabled": True,
        "amount": AMOUNT,
        "stripe_customer": customer,
        "stripe_payment_method": pm,
        **auto,
    }
    account = await open_account(client, "customer", owner["id"], auto_topup=auto)
    await grant(client, account["id"], funding)
    return account, key


async def test_draining_requests_charge_once_and_the_credit_is_booked_once(
    make_settings, localstripe, sdk, upstream
):
    settings = settings_for(make_settings, localstripe.url)
    worst = usd(worst_case_nanos())
    with Receiver() as receiver:
        localstripe.register_webhook(receiver.url, WEBHOOK_SECRET)
        async with running(settings) as (app, client):
            customer, card = await card_on_file(sdk)
            funding = 6 * worst
            account, key = await funded_account(
                client, customer, card, str(funding), threshold=3 * worst
            )
            for _ in range(6):  # each request settles below its worst case
                assert (await chat(client, key)).status_code == 200
                await checked(app)
            await checked(app)  # more passes: nothing more to charge

            sent = charges(localstripe)
            assert len(sent) == 1, sent
            assert sent[0]["form"]["amount"] == "1000"
            assert sent[0]["form"]["metadata"]["tollhouse_flow"] == "auto"
            [attempt] = await topups(client, account["id"])
            assert (attempt["kind"], attempt["status"]) == ("auto", "succeeded")
            assert sent[0]["idempotency_key"] == f"tollhouse:charge:{attempt['id']}"
            assert (await balance(client, account["id"]))["available"] > AMOUNT

            # localstripe's signed payment_intent.succeeded arrives too: booked nothing.
            def ours(delivery) -> bool:
                obj = delivery.json()["data"]["object"]
                return delivery.type == "payment_intent.succeeded" and (
                    obj.get("metadata", {}).get("tollhouse_topup") == attempt["id"]
                )

            event = await asyncio.to_thread(receiver.wait_for, ours)
            answer = await client.post(
                "/api/webhooks/stripe",
                content=event.body,
                headers={"stripe-signature": str(event.signature)},
            )
            assert answer.json() == {"received": True, "status": "ignored"}
            # …and a late answer to the charge itself books nothing either.
            async with app.services.engine.begin() as conn:
                again = await payments.book_charge(
                    conn, attempt["id"], account["id"], attempt["payment_intent"], AMOUNT
                )
                seen = await conn.execute(
                    select(stripe_events.c.transaction_seq).where(
                        stripe_events.c.event_id == event.json()["id"]
                    )
                )
            assert again is False and seen.one() == (None,)

            purchases = [e for e in await entries(client, account["id"]) if e["kind"] == "purchase"]
            assert len(purchases) == 1
            assert (purchases[0]["amount"], purchases[0]["stripe_event"]) == (AMOUNT, None)
            assert purchases[0]["payment_intent"] == attempt["payment_intent"]
            auto = (await account_of(client, account["id"]))["auto_topup"]
            assert (auto["consecutive_failures"], auto["disabled_reason"]) == (0, None)


async def test_three_declines_in_a_row_turn_it_off_with_the_reason(
    make_settings, localstripe, sdk, upstream
):
    settings = settings_for(make_settings, localstripe.url)
    async with running(settings) as (app, client):
        customer, card = await card_on_file(sdk, "pm_card_chargeCustomerFail")
        account, _ = await funded_account(client, customer, card, "1", threshold=Decimal(5))
        for _ in range(5):
            await checked(app)

        assert len(charges(localstripe)) == 3
        attempts = await topups(client, account["id"])
        assert [(t["kind"], t["status"]) for t in attempts] == [("auto", "failed")] * 3
        assert {t["failure_code"] for t in attempts} == {"card_declined"}
        auto = (await account_of(client, account["id"]))["auto_topup"]
        assert auto["enabled"] is False and auto["consecutive_failures"] == 3
        assert auto["disabled_reason"].startswith(
            "auto top-up turned off after 3 failed attempts in a row; the last: "
            "Your card was declined."
        )

        # The operator fixes the card and turns it back on: the run starts afresh.
        _, good = await card_on_file(sdk)
        body = {"auto_topup": {"enabled": True, "threshold": 5, "amount": AMOUNT}}
        body["auto_topup"]["stripe_payment_method"] = good
        await call(client, "PUT", f"/accounts/{account['id']}", body)
        await checked(app)
        auto = (await account_of(client, account["id"]))["auto_topup"]
        assert (auto["enabled"], auto["consecutive_failures"], auto["disabled_reason"]) == (
            True,
            0,
            None,
        )
        assert (await topups(client, account["id"]))[0]["status"] == "succeeded"


async def test_a_decline_waits_before_the_card_is_tried_again(
    make_settings, localstripe, sdk, upstream
):
    settings = settings_for(make_settings, localstripe.url, credits_auto_topup_retry_s=3600)
    async with running(settings) as (app, client):
        customer, card = await card_on_file(sdk, "pm_card_chargeCustomerFail")
        account, _ = await funded_account(client, customer, card, "1", threshold=Decimal(5))
        for _ in range(3):
            await checked(app)
        assert len(charges(localstripe)) == 1
        auto = (await account_of(client, account["id"]))["auto_topup"]
        assert (auto["enabled"], auto["consecutive_failures"]) == (True, 1)


async def test_a_card_that_needs_its_owner_is_a_failure_that_says_so(
    make_settings, localstripe, sdk, upstream
):
    settings = settings_for(make_settings, localstripe.url)
    async with running(settings) as (app, client):
        customer, _ = await card_on_file(sdk)
        card = await three_d_secure_card(sdk, customer)
        account, _ = await funded_account(client, customer, card, "1", threshold=Decimal(5))
        await checked(app)

        [attempt] = await topups(client, account["id"])
        assert (attempt["status"], attempt["failure_code"]) == ("failed", "authentication_required")
        assert attempt["failure_message"].startswith("the card needs its owner")
        assert attempt["payment_intent"] is not None
        auto = (await account_of(client, account["id"]))["auto_topup"]
        assert auto["consecutive_failures"] == 1


async def test_the_monthly_cap_stops_charges_and_says_why(
    make_settings, localstripe, sdk, upstream
):
    settings = settings_for(make_settings, localstripe.url)
    async with running(settings) as (app, client):
        customer, card = await card_on_file(sdk)
        # Still below the threshold after one top-up: only the cap stops the second.
        account, _ = await funded_account(
            client, customer, card, "1", threshold=Decimal(100), monthly_cap=Decimal(15)
        )
        for _ in range(3):
            await checked(app)

        assert len(charges(localstripe)) == 1
        assert [t["status"] for t in await topups(client, account["id"])] == ["succeeded"]
        auto = (await account_of(client, account["id"]))["auto_topup"]
        month = f"{datetime.now(UTC):%Y-%m}"
        assert auto["skipped_reason"] == (
            f"monthly cap: 10 USD of auto top-ups in {month} (UTC) and 10 USD more would "
            "pass the cap of 15 USD; none until next month or a higher cap"
        )
        # A higher cap lets the next one through, and the reason goes.
        body = {"auto_topup": {"monthly_cap": Decimal(20)}}
        await call(client, "PUT", f"/accounts/{account['id']}", body)
        await checked(app)
        assert len(charges(localstripe)) == 2
        auto = (await account_of(client, account["id"]))["auto_topup"]
        assert auto["skipped_reason"] is None


async def test_stripe_out_of_reach_is_a_failure(make_settings, upstream):
    settings = settings_for(make_settings, f"http://127.0.0.1:{free_port()}")
    async with running(settings) as (app, client):
        account, _ = await funded_account(client, "cus_x", "pm_x", "1", threshold=Decimal(5))
        await checked(app)
        [attempt] = await topups(client, account["id"])
        assert (attempt["status"], attempt["failure_code"]) == ("failed", "upstream_error")
        assert "could not reach Stripe" in attempt["failure_message"]
        assert (await account_of(client, account["id"]))["auto_topup"]["consecutive_failures"] == 1


async def test_one_pending_auto_topup_per_account_is_the_databases_rule(
    make_settings, both_stores, upstream
):
    settings = make_settings(allow_anonymous=False, **both_stores)
    async with running(settings) as (app, client):
        owner = await create_customer(client)
        account = await open_account(client, "customer", owner["id"])
        now = datetime.now(UTC)
        row = {"account_id": account["id"], "amount": AMOUNT, "created_at": now}
        row |= {"updated_at": now, "kind": "auto", "status": "pending"}
        async with app.services.engine.begin() as conn:
            await conn.execute(insert(credit_topups).values(id="top_1", **row))
            await conn.execute(
                insert(credit_topups).values(id="top_2", **row | {"kind": "checkout"})
            )
        with pytest.raises(IntegrityError):
            async with app.services.engine.begin() as conn:
                await conn.execute(insert(credit_topups).values(id="top_3", **row))


async def test_two_replicas_charge_once(
    make_settings, pg_url, redis_url, localstripe, sdk, upstream
):
    settings = settings_for(
        make_settings, localstripe.url, database_url=pg_url, redis_url=redis_url
    )
    async with contextlib.AsyncExitStack() as stack:
        group = [await stack.enter_async_context(running(settings)) for _ in range(2)]
        (first, client), (second, other) = group
        customer, card = await card_on_file(sdk)
        worst = usd(worst_case_nanos())
        account, key = await funded_account(
            client, customer, card, str(6 * worst), threshold=3 * worst
        )
        await second.services.admission.reload()
        # Both replicas serve the account and both check it, side by side, many times.
        for _ in range(6):
            await asyncio.gather(chat(client, key), chat(other, key))
            await asyncio.gather(*(app.services.recorder.flush() for app, _ in group))
            await asyncio.gather(
                *(app.services.balance_watch.check(account["id"]) for app, _ in group for _ in "xy")
            )
            await asyncio.gather(*(app.services.balance_watch.idle() for app, _ in group))
        await asyncio.gather(*(checked(app) for app, _ in group))

        assert len(charges(localstripe)) == 1
        assert [t["status"] for t in await topups(client, account["id"])] == ["succeeded"]
        purchases = [e for e in await entries(other, account["id"]) if e["kind"] == "purchase"]
        assert len(purchases) == 1 and purchases[0]["amount"] == AMOUNT
        async with first.services.engine.connect() as conn:
            pending = await conn.execute(
                select(func.count()).where(credit_topups.c.status == "pending")
            )
        assert pending.scalar() == 0


async def test_without_stripe_it_is_inert_and_says_so_at_start(make_settings, upstream, caplog):
    settings = make_settings(allow_anonymous=False)
    async with running(settings) as (app, client):
        account, _ = await funded_account(client, "cus_x", "pm_x", "1", threshold=Decimal(5))
        await checked(app)
        assert await topups(client, account["id"]) == []
    with caplog.at_level(logging.WARNING, logger="tollhouse.credits"):
        async with running(settings) as (app, client):
            await checked(app)
            assert await topups(client, account["id"]) == []
    assert any(
        "auto top-up is off: TOLLHOUSE_STRIPE_SECRET_KEY is not set; 1 account(s)" in r.message
        for r in caplog.records
    )


async def auto_account(client: httpx.AsyncClient, customer: str, card: str) -> dict[str, Any]:
    """An account with auto top-up on the card (threshold 5 USD), not funded yet."""
    owner = await create_customer(client)
    auto = {"enabled": True, "threshold": Decimal(5), "amount": AMOUNT}
    auto |= {"stripe_customer": customer, "stripe_payment_method": card}
    return await open_account(client, "customer", owner["id"], auto_topup=auto)


async def insert_attempt(app: Any, account_id: str, **row: Any) -> None:
    now = datetime.now(UTC)
    values = {"account_id": account_id, "kind": "auto", "amount": AMOUNT}
    values |= {"created_at": now, "updated_at": now, **row}
    async with app.services.engine.begin() as conn:
        await conn.execute(insert(credit_topups).values(**values))


async def test_a_paid_top_up_not_booked_yet_holds_the_next(
    make_settings, localstripe, sdk, upstream
):
    settings = settings_for(make_settings, localstripe.url)
    async with running(settings) as (app, client):
        customer, card = await card_on_file(sdk)
        account = await auto_account(client, customer, card)
        # Stripe said paid; its credit is not in the journal yet.
        await insert_attempt(
            app, account["id"], id="top_paid", status="succeeded", payment_intent="pi_unbooked"
        )
        await grant(client, account["id"], "1")
        await checked(app)
        assert charges(localstripe) == []


async def test_an_attempt_stripe_never_answered_is_sent_again_under_its_own_key(
    make_settings, localstripe, sdk, upstream
):
    settings = settings_for(make_settings, localstripe.url)
    async with running(settings) as (app, client):
        customer, card = await card_on_file(sdk)
        account = await auto_account(client, customer, card)
        # The process died between writing its attempt and hearing Stripe's answer.
        stale = datetime.now(UTC) - timedelta(hours=1)
        await insert_attempt(app, account["id"], id="top_lost", status="pending", updated_at=stale)
        await grant(client, account["id"], "1")
        await checked(app)

        [sent] = charges(localstripe)
        assert sent["idempotency_key"] == "tollhouse:charge:top_lost"
        [attempt] = await topups(client, account["id"])
        assert (attempt["id"], attempt["status"]) == ("top_lost", "succeeded")
        assert (await balance(client, account["id"]))["total"] == 1 + AMOUNT


# --- the decision, on one database, without a server -----------------------------------

CARD = {"enabled": True, "threshold": Decimal(5), "amount": AMOUNT}


@contextlib.asynccontextmanager
async def deciding(api_base: str, engine: Any) -> AsyncIterator[AutoTopups]:
    """``AutoTopups`` on ``engine`` charging through Stripe at ``api_base``."""
    settings = stripe_settings(api_base)
    async with Payments(settings, checkout=False) as client:
        yield AutoTopups(
            engine, client, retry_after=timedelta(0), redrive_after=timedelta(minutes=5)
        )


async def auto_book_account(
    engine: Any, card: str = "pm_card_visa", funding: str | None = "1"
) -> str:
    """An account with auto top-up on ``card`` (threshold 5 USD), funded ``funding``."""
    auto = CARD | {"stripe_customer": "cus_test", "stripe_payment_method": card}
    async with engine.begin() as conn:
        account_id = await open_customer_account(conn, "acme", auto_topup=auto)
        if funding is not None:
            await books_grant(conn, account_id, funding, datetime.now(UTC))
    return account_id


async def attempts_of(engine: Any, account_id: str) -> list[Any]:
    async with engine.connect() as conn:
        return await topups_of(conn, account_id)


async def test_no_attempt_for_an_account_not_due_or_never_moved(sqlite_engine):
    engine, now = sqlite_engine, datetime.now(UTC)
    never = await auto_book_account(engine, funding=None)  # below 5, but new and empty
    plenty = await auto_book_account(engine, funding="50")
    dead = f"http://127.0.0.1:{free_port()}"
    async with deciding(dead, engine) as topups, engine.begin() as conn:
        for account_id in ("acct_none", never, plenty):
            assert await topups.open_attempt(conn, account_id, None, now) is None
        # Admission's live view counts: what requests hold makes it due.
        live = (Decimal(0), Decimal(46))
        assert await topups.open_attempt(conn, plenty, live, now) is not None
    assert await attempts_of(engine, never) == []


async def test_a_pending_attempt_the_latest_five_do_not_show_still_holds_the_next(sqlite_engine):
    """The partial unique index is the last word: one pending auto top-up per account."""
    engine = sqlite_engine
    account_id = await auto_book_account(engine)
    now = datetime.now(UTC)
    rows = [{"id": "top_old", "status": "pending", "created_at": now - timedelta(days=1)}]
    rows += [
        {"id": f"top_{n}", "status": "failed", "created_at": now - timedelta(hours=n)}
        for n in range(1, 6)
    ]
    async with engine.begin() as conn:
        for row in rows:
            values = {"account_id": account_id, "kind": "auto", "amount": AMOUNT}
            await conn.execute(insert(credit_topups).values(**values, updated_at=now, **row))
    async with deciding(f"http://127.0.0.1:{free_port()}", engine) as topups:
        assert await topups.check(account_id, None) is None
    assert len(await attempts_of(engine, account_id)) == 6


async def test_a_delayed_method_stays_pending_for_its_webhook(sqlite_engine, stripe_checkout):
    engine = sqlite_engine
    account_id = await auto_book_account(engine, card="pm_test_processing")
    async with deciding(stripe_checkout.url, engine) as topups:
        assert await topups.check(account_id, None) == "processing"
        [attempt] = await attempts_of(engine, account_id)
        assert (attempt.status, attempt.payment_intent is not None) == ("pending", True)
        # In flight at Stripe: not sent again, nothing new opened.
        assert await topups.check(account_id, None) is None
    assert len([r for r in stripe_checkout.requests() if r["path"] == "/v1/payment_intents"]) == 1
    assert await attempts_of(engine, account_id) == [attempt]
    async with engine.connect() as conn:
        assert (await get_account(conn, account_id)).funded == 1


async def test_an_attempt_answered_while_another_replica_claims_it_is_not_sent_again(pg_engine):
    """Stripe's late answer (``processing``) is written while a replica claims the
    attempt to send it again: the claim matches nothing and nothing is sent."""
    engine = pg_engine
    account_id = await auto_book_account(engine)
    stale = datetime.now(UTC) - timedelta(hours=1)
    row = {"account_id": account_id, "kind": "auto", "amount": AMOUNT, "status": "pending"}
    async with engine.begin() as conn:
        await conn.execute(
            insert(credit_topups).values(id="top_slow", created_at=stale, updated_at=stale, **row)
        )
    t = credit_topups.c
    async with deciding(f"http://127.0.0.1:{free_port()}", engine) as topups:

        async def claim() -> Any:
            async with engine.begin() as conn:
                return await topups.open_attempt(conn, account_id, None, datetime.now(UTC))

        async with engine.connect() as answer:
            await answer.begin()
            await answer.execute(
                update(credit_topups)
                .where(t.id == "top_slow", t.status == "pending")
                .values(payment_intent="pi_slow", updated_at=datetime.now(UTC))
            )
            claiming = asyncio.create_task(claim())
            await wait_until(lambda: waiting_on_a_lock(engine), what="the claim waiting")
            await answer.commit()
        assert await claiming is None
        assert topups.charges == 0
    [attempt] = await attempts_of(engine, account_id)
    assert (attempt.status, attempt.payment_intent) == ("pending", "pi_slow")


async def test_without_the_stripe_library_it_is_inert_and_says_so(
    sqlite_engine, monkeypatch, caplog
):
    await auto_book_account(sqlite_engine)
    settings = stripe_settings(f"http://127.0.0.1:{free_port()}")
    monkeypatch.setitem(sys.modules, "stripe", None)  # as if the extra were not installed
    monkeypatch.delitem(sys.modules, "tollhouse.credits.stripe")
    with caplog.at_level(logging.WARNING, logger="tollhouse.credits"):
        assert await autotopup.start(settings, sqlite_engine) is None
    assert any(
        "auto top-up is off: the stripe library is not installed (pip install "
        "'tollhouse[stripe]'); 1 account(s) have it enabled" in r.getMessage()
        for r in caplog.records
    )


async def test_without_stripe_and_without_its_database_the_server_still_starts(tmp_path, caplog):
    settings = stripe_settings(f"http://127.0.0.1:{free_port()}", stripe_secret_key=None)
    away = f"sqlite+aiosqlite:///{tmp_path / 'missing' / 'tollhouse.db'}"
    async with engine_for(away, migrated=False) as engine:
        with caplog.at_level(logging.WARNING, logger="tollhouse.credits"):
            assert await autotopup.start(settings, engine) is None
    # The failed connection's aiosqlite thread still has its close to report: let it
    # reach this loop before the test closes it, or the thread raises "Event loop is
    # closed" into whichever test runs next on this worker.
    await asyncio.sleep(0.2)
    [warning] = [r.getMessage() for r in caplog.records if "auto top-up is off" in r.getMessage()]
    assert warning.startswith(
        "auto top-up is off: TOLLHOUSE_STRIPE_SECRET_KEY is not set (accounts not checked: "
    )
