"""Checkout top-ups against the in-repo Checkout server, with the official ``stripe`` SDK.

``Payments.create_checkout`` sends exact cents under an idempotency key of our top-up id;
the server completes, fails or expires the session and delivers the events signed as
Stripe signs them to a loopback receiver, where ``verify`` and ``fact_of`` read them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from devtools.stripe_checkout import CheckoutServer
from tests.credits.stripe_support import (
    SUCCESS_URL,
    WEBHOOK_SECRET,
    Receiver,
    stripe_settings,
    webhook_secret,
)

from tollhouse.credits.stripe import (
    PaymentFailed,
    Payments,
    Purchase,
    fact_of,
    to_cents,
    verify,
)
from tollhouse.errors import UpstreamError, ValidationFailed

ACCOUNT = "acct_7"
OURS = {"tollhouse_account": ACCOUNT, "tollhouse_topup": "top_1", "tollhouse_flow": "checkout"}


@pytest.fixture
def receiver(stripe_checkout: CheckoutServer):
    with Receiver() as endpoint:
        stripe_checkout.register_webhook(endpoint.url, WEBHOOK_SECRET)
        yield endpoint


def settings_of(server: CheckoutServer, **overrides):
    return stripe_settings(server.url, **overrides)


def read(receiver: Receiver, kind: str, server: CheckoutServer):
    """Every delivery of ``kind`` verified and read, as the webhook route will."""
    secret = webhook_secret(settings_of(server))
    return [fact_of(verify(d.body, d.signature, secret)) for d in receiver.of_type(kind)]


@pytest.mark.parametrize(
    ("amount", "cents"),
    [("0.50", 50), ("10.5", 1050), ("10.50", 1050), ("7", 700), ("12.300", 1230),
     ("1234.56", 123456), ("999999.99", 99_999_999), ("1E+2", 10_000)],
)  # fmt: skip
def test_dollars_become_cents_exactly(amount: str, cents: int):
    assert to_cents(Decimal(amount)) == cents


async def test_a_checkout_is_created_in_exact_cents_under_an_idempotency_key_of_our_id(
    stripe_checkout: CheckoutServer,
):
    expires = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=2)
    settings = settings_of(stripe_checkout, stripe_cancel_url="https://gateway.example/credits")
    async with Payments(settings) as payments:
        session = await payments.create_checkout(
            "top_1", Decimal("10.50"), account_id=ACCOUNT, expires_at=expires
        )
    assert session.session_id.startswith("cs_")
    assert session.url is not None and session.session_id in session.url
    assert (session.status, session.payment_status) == ("open", "unpaid")
    assert session.amount == Decimal("10.50") and session.payment_intent_id is None
    assert session.expires_at == expires

    [request] = stripe_checkout.requests()
    assert (request["method"], request["path"]) == ("POST", "/v1/checkout/sessions")
    assert request["idempotency_key"] == "tollhouse:checkout:top_1"
    assert request["form"] == {
        "mode": "payment",
        "line_items": [
            {
                "price_data": {
                    "currency": "usd",
                    "unit_amount": "1050",
                    "product_data": {"name": "Prepaid credits"},
                },
                "quantity": "1",
            }
        ],
        "success_url": SUCCESS_URL,
        "cancel_url": "https://gateway.example/credits",
        "client_reference_id": "top_1",
        "metadata": OURS,
        "payment_intent_data": {"metadata": OURS},
        "expires_at": str(int(expires.timestamp())),
    }


async def test_the_same_top_up_sent_again_is_the_same_session(stripe_checkout: CheckoutServer):
    async with Payments(settings_of(stripe_checkout)) as payments:
        first = await payments.create_checkout("top_1", Decimal("25"), account_id=ACCOUNT)
        again = await payments.create_checkout("top_1", Decimal("25"), account_id=ACCOUNT)
        with pytest.raises(ValidationFailed, match="other parameters"):
            await payments.create_checkout("top_1", Decimal("26"), account_id=ACCOUNT)
    assert again == first
    keys = [(r["idempotency_key"], r["replayed"]) for r in stripe_checkout.requests()]
    assert keys == [
        ("tollhouse:checkout:top_1", False),
        ("tollhouse:checkout:top_1", True),
        ("tollhouse:checkout:top_1", False),  # refused: the key was used with 2500 cents
    ]


@pytest.mark.parametrize(
    "amount", ["10.005", "0.001", "0.49", "0", "-5", "1000000.00", "NaN", "Infinity", "1E+10"]
)
async def test_amounts_stripe_cannot_charge_exactly_are_refused_before_any_call(
    stripe_checkout: CheckoutServer, amount: str
):
    async with Payments(settings_of(stripe_checkout)) as payments:
        with pytest.raises(ValidationFailed) as refused:
            await payments.create_checkout("top_1", Decimal(amount), account_id=ACCOUNT)
    assert refused.value.status_code == 400 and refused.value.param == "amount"
    assert stripe_checkout.requests() == []


@pytest.mark.parametrize("topup", ["", "top 1", "x" * 201, "top/1", "tóp"])
async def test_ids_that_cannot_key_a_stripe_write_are_refused(
    stripe_checkout: CheckoutServer, topup: str
):
    async with Payments(settings_of(stripe_checkout)) as payments:
        with pytest.raises(ValidationFailed, match="topup_id"):
            await payments.create_checkout(topup, Decimal("5"), account_id=ACCOUNT)
        with pytest.raises(ValidationFailed, match="expires_at needs a time zone"):
            await payments.create_checkout(
                "top_1", Decimal("5"), account_id=ACCOUNT, expires_at=datetime(2030, 1, 1)
            )
    assert stripe_checkout.requests() == []


async def test_what_stripe_refuses_is_an_upstream_error_with_its_reason(
    stripe_checkout: CheckoutServer,
):
    too_soon = datetime.now(UTC) + timedelta(minutes=10)  # Stripe wants 30 min to 24 h
    async with Payments(settings_of(stripe_checkout)) as payments:
        with pytest.raises(UpstreamError, match="expires_at") as refused:
            await payments.create_checkout(
                "top_1", Decimal("5"), account_id=ACCOUNT, expires_at=too_soon
            )
    assert refused.value.status_code == 400


async def test_saving_the_card_for_auto_top_ups(stripe_checkout: CheckoutServer):
    async with Payments(settings_of(stripe_checkout)) as payments:
        await payments.create_checkout(
            "top_1", Decimal("5"), account_id=ACCOUNT, save_payment_method=True
        )
        await payments.create_checkout(
            "top_2", Decimal("5"), account_id=ACCOUNT, customer="cus_1", save_payment_method=True
        )
    new, known = (r["form"] for r in stripe_checkout.requests())
    assert new["payment_intent_data"]["setup_future_usage"] == "off_session"
    assert new["customer_creation"] == "always" and "customer" not in new
    assert known["customer"] == "cus_1" and "customer_creation" not in known


async def test_a_paid_session_is_one_purchase_by_two_events(
    stripe_checkout: CheckoutServer, receiver: Receiver
):
    async with Payments(settings_of(stripe_checkout)) as payments:
        session = await payments.create_checkout("top_1", Decimal("10.50"), account_id=ACCOUNT)
        paid = stripe_checkout.complete(session.session_id)
        now = await payments.retrieve_checkout(session.session_id)
    intent = paid["object"]["payment_intent"]
    assert (now.status, now.payment_status, now.payment_intent_id) == ("complete", "paid", intent)

    [completed] = read(receiver, "checkout.session.completed", stripe_checkout)
    [succeeded] = read(receiver, "payment_intent.succeeded", stripe_checkout)
    assert read(receiver, "charge.succeeded", stripe_checkout) == [None]
    assert completed == Purchase(
        event_id=paid["events"][0]["id"],
        payment_intent_id=intent,
        amount=Decimal("10.50"),
        account_id=ACCOUNT,
        topup_id="top_1",
        source="checkout",
        session_id=session.session_id,
    )
    assert isinstance(succeeded, Purchase) and succeeded.source == "payment_intent"
    assert (succeeded.amount, succeeded.topup_id) == (Decimal("10.50"), "top_1")
    assert succeeded.key == completed.key == f"stripe:purchase:{intent}"
    assert succeeded.event_id != completed.event_id


async def test_the_same_event_delivered_at_once_many_times_is_one_fact(
    stripe_checkout: CheckoutServer, receiver: Receiver
):
    async with Payments(settings_of(stripe_checkout)) as payments:
        session = await payments.create_checkout("top_1", Decimal("3"), account_id=ACCOUNT)
    paid = stripe_checkout.complete(session.session_id, times=5)
    assert paid["events"][0]["deliveries"] == [200] * 5
    facts = read(receiver, "checkout.session.completed", stripe_checkout)
    assert len(facts) == 5 and len(set(facts)) == 1
    again = stripe_checkout.deliver(paid["events"][0]["id"], times=3)
    assert again["deliveries"] == [200] * 3
    assert set(read(receiver, "checkout.session.completed", stripe_checkout)) == set(facts)


async def test_a_delayed_payment_is_bought_when_it_arrives(
    stripe_checkout: CheckoutServer, receiver: Receiver
):
    async with Payments(settings_of(stripe_checkout)) as payments:
        session = await payments.create_checkout("top_1", Decimal("40"), account_id=ACCOUNT)
    stripe_checkout.complete(session.session_id, payment_status="unpaid")
    assert read(receiver, "checkout.session.completed", stripe_checkout) == [None]
    stripe_checkout.session_action(session.session_id, "succeed")
    [bought] = read(receiver, "checkout.session.async_payment_succeeded", stripe_checkout)
    [also] = read(receiver, "payment_intent.succeeded", stripe_checkout)
    assert isinstance(bought, Purchase) and bought.amount == Decimal("40")
    assert isinstance(also, Purchase) and also.key == bought.key


async def test_a_delayed_payment_that_fails_is_a_failed_top_up(
    stripe_checkout: CheckoutServer, receiver: Receiver
):
    async with Payments(settings_of(stripe_checkout)) as payments:
        session = await payments.create_checkout("top_1", Decimal("40"), account_id=ACCOUNT)
    stripe_checkout.complete(session.session_id, payment_status="unpaid")
    stripe_checkout.session_action(session.session_id, "fail")
    [failed] = read(receiver, "checkout.session.async_payment_failed", stripe_checkout)
    assert isinstance(failed, PaymentFailed)
    assert (failed.account_id, failed.topup_id, failed.code) == (
        ACCOUNT,
        "top_1",
        "async_payment_failed",
    )
    # The Checkout page lets a payer try again: its PaymentIntent failing ends nothing.
    assert read(receiver, "payment_intent.payment_failed", stripe_checkout) == [None]


async def test_an_expired_session_is_a_failed_top_up(
    stripe_checkout: CheckoutServer, receiver: Receiver
):
    async with Payments(settings_of(stripe_checkout)) as payments:
        session = await payments.create_checkout("top_1", Decimal("5"), account_id=ACCOUNT)
        expired = await payments.expire_checkout(session.session_id)
    assert (expired.status, expired.url) == ("expired", None)
    assert stripe_checkout.requests()[-1]["idempotency_key"] == (
        f"tollhouse:expire:{session.session_id}"
    )
    [failed] = read(receiver, "checkout.session.expired", stripe_checkout)
    assert failed == PaymentFailed(
        event_id=failed.event_id if failed else "",
        payment_intent_id=None,
        account_id=ACCOUNT,
        topup_id="top_1",
        code="expired",
        message="the Checkout Session expired unpaid",
        session_id=session.session_id,
    )
    assert failed.key == f"stripe:payment_failed:{session.session_id}"
