"""Auto top-ups against localstripe: off-session charges, customers, and localstripe's own
signed webhooks read by ``verify`` and ``fact_of``.

localstripe emits ``payment_intent.succeeded`` and ``…payment_failed`` (and customer,
invoice, payout events); it has no refund or dispute events, which the Checkout server's
tests cover. Its decline (``pm_card_chargeCustomerFail``) carries no PaymentIntent, where
Stripe's would.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import pytest
import stripe
from devtools.localstripe_server import LocalStripe
from devtools.stripe_checkout import CheckoutServer
from pydantic import SecretStr
from tests.credits.stripe_support import SECRET_KEY, WEBHOOK_SECRET, Receiver, stripe_settings

from tollhouse.cli.processes import free_port
from tollhouse.credits.stripe import (
    Charge,
    PaymentFailed,
    Payments,
    Purchase,
    _charged,
    _session,
    fact_of,
    verify,
)
from tollhouse.errors import UpstreamError, UpstreamTimeout, ValidationFailed

ACCOUNT = "acct_9"


@pytest.fixture
async def payments(localstripe: LocalStripe) -> AsyncIterator[Payments]:
    async with Payments(stripe_settings(localstripe.url)) as client:
        yield client


@pytest.fixture
async def sdk(localstripe: LocalStripe) -> AsyncIterator[stripe.StripeClient]:
    """The official SDK on localstripe, for what a payer's browser would do (save a card)."""
    http = stripe.AIOHTTPClient()
    yield stripe.StripeClient(SECRET_KEY, base_addresses={"api": localstripe.url}, http_client=http)
    await http.close_async()


async def saved_card(sdk: stripe.StripeClient, customer: str, pm: str = "pm_card_visa") -> str:
    return str((await sdk.v1.payment_methods.attach_async(pm, {"customer": customer})).id)


def charges_sent(localstripe: LocalStripe) -> list[dict[str, Any]]:
    return [r for r in localstripe.requests() if r["path"] == "/v1/payment_intents"]


async def test_a_customer_per_account_once(localstripe: LocalStripe, payments: Payments):
    first = await payments.create_customer(ACCOUNT, email="ops@example.com")
    again = await payments.create_customer(ACCOUNT, email="ops@example.com")
    assert first == again and first.startswith("cus_")
    sent = [r for r in localstripe.requests() if r["path"] == "/v1/customers"]
    assert [(r["idempotency_key"], r["replayed"]) for r in sent] == [
        ("tollhouse:customer:acct_9", False),
        ("tollhouse:customer:acct_9", True),
    ]
    assert sent[0]["form"] == {
        "metadata": {"tollhouse_account": ACCOUNT},
        "email": "ops@example.com",
    }


async def test_an_off_session_charge_succeeds_once_per_attempt(
    localstripe: LocalStripe, payments: Payments, sdk: stripe.StripeClient
):
    customer = await payments.create_customer(ACCOUNT)
    card = await saved_card(sdk, customer)
    kwargs = {"customer": customer, "payment_method": card, "account_id": ACCOUNT}
    charge = await payments.charge_off_session("att_1", amount=Decimal("25.00"), **kwargs)
    again = await payments.charge_off_session("att_1", amount=Decimal("25.00"), **kwargs)
    assert charge.status == "succeeded" and charge.payment_intent_id is not None
    assert again == charge  # the same attempt is the same PaymentIntent, charged once
    with pytest.raises(ValidationFailed, match="other parameters"):
        await payments.charge_off_session("att_1", amount=Decimal("26.00"), **kwargs)
    first, retry, _refused = charges_sent(localstripe)
    assert first["idempotency_key"] == retry["idempotency_key"] == "tollhouse:charge:att_1"
    assert retry["replayed"] is True
    assert first["form"] == {
        "amount": "2500",
        "currency": "usd",
        "customer": customer,
        "payment_method": card,
        "off_session": "true",
        "confirm": "true",
        "metadata": {
            "tollhouse_account": ACCOUNT,
            "tollhouse_topup": "att_1",
            "tollhouse_flow": "auto",
        },
    }


async def test_a_declined_card_is_a_result_not_an_exception(
    localstripe: LocalStripe, payments: Payments
):
    customer = await payments.create_customer(ACCOUNT)
    charge = await payments.charge_off_session(
        "att_2",
        customer=customer,
        payment_method="pm_card_chargeCustomerFail",
        amount=Decimal("5"),
        account_id=ACCOUNT,
    )
    assert charge == Charge(None, "failed", "card_declined", "Your card was declined.")


async def test_a_card_that_needs_its_owner_requires_action(
    payments: Payments, sdk: stripe.StripeClient
):
    customer = await payments.create_customer(ACCOUNT)
    three_d_secure = {"number": "4000002500003155", "exp_month": 12, "exp_year": 2030, "cvc": "123"}
    method = await sdk.v1.payment_methods.create_async({"type": "card", "card": three_d_secure})
    card = await saved_card(sdk, customer, str(method.id))
    charge = await payments.charge_off_session(
        "att_3", customer=customer, payment_method=card, amount=Decimal("5"), account_id=ACCOUNT
    )
    assert charge.status == "requires_action" and charge.payment_intent_id is not None
    assert charge.failure_code == "authentication_required"


async def test_a_card_stripe_does_not_know_is_a_failed_charge(payments: Payments):
    customer = await payments.create_customer(ACCOUNT)
    charge = await payments.charge_off_session(
        "att_4",
        customer=customer,
        payment_method="pm_gone",
        amount=Decimal("5"),
        account_id=ACCOUNT,
    )
    assert (charge.status, charge.payment_intent_id) == ("failed", None)


async def test_localstripe_webhooks_verify_and_read_as_facts(
    localstripe: LocalStripe, payments: Payments, sdk: stripe.StripeClient
):
    with Receiver() as receiver:
        localstripe.register_webhook(receiver.url, WEBHOOK_SECRET)
        customer = await payments.create_customer(ACCOUNT)
        card = await saved_card(sdk, customer)
        paid = await payments.charge_off_session(
            "att_5",
            customer=customer,
            payment_method=card,
            amount=Decimal("12.34"),
            account_id=ACCOUNT,
        )
        await payments.charge_off_session(
            "att_6",
            customer=customer,
            payment_method="pm_card_chargeCustomerFail",
            amount=Decimal("12.34"),
            account_id=ACCOUNT,
        )

        def of(kind: str, topup: str):
            def check(delivery) -> bool:
                event = delivery.json()
                metadata = event["data"]["object"].get("metadata") or {}
                return event["type"] == kind and metadata.get("tollhouse_topup") == topup

            return check

        secret = SecretStr(WEBHOOK_SECRET)
        succeeded = receiver.wait_for(of("payment_intent.succeeded", "att_5"))
        failed = receiver.wait_for(of("payment_intent.payment_failed", "att_6"))
        bought = fact_of(verify(succeeded.body, succeeded.signature, secret))
        refused = fact_of(verify(failed.body, failed.signature, secret))
    assert bought == Purchase(
        event_id=succeeded.json()["id"],
        payment_intent_id=str(paid.payment_intent_id),
        amount=Decimal("12.34"),
        account_id=ACCOUNT,
        topup_id="att_5",
        source="payment_intent",
    )
    assert isinstance(refused, PaymentFailed)
    assert (refused.account_id, refused.topup_id, refused.code) == (
        ACCOUNT,
        "att_6",
        "card_declined",
    )
    assert refused.message == "Your card was declined."


async def test_refunds_work_on_localstripe_but_send_no_event(
    localstripe: LocalStripe, payments: Payments, sdk: stripe.StripeClient
):
    # What localstripe lacks, stated: the refund events come from the Checkout server.
    customer = await payments.create_customer(ACCOUNT)
    card = await saved_card(sdk, customer)
    paid = await payments.charge_off_session(
        "att_7", customer=customer, payment_method=card, amount=Decimal("9"), account_id=ACCOUNT
    )
    refund = await sdk.v1.refunds.create_async(
        {"payment_intent": str(paid.payment_intent_id), "amount": 400}
    )
    assert (refund.amount, refund.status) == (400, "succeeded")
    events = await sdk.v1.events.list_async({"type": "refund.created"})
    assert events.data == []


async def test_stripe_out_of_reach_is_an_upstream_error():
    async with Payments(stripe_settings(f"http://127.0.0.1:{free_port()}")) as payments:
        with pytest.raises(UpstreamError, match="could not reach Stripe") as failed:
            await payments.charge_off_session(
                "att_8",
                customer="cus_1",
                payment_method="pm_1",
                amount=Decimal("5"),
                account_id="a",
            )
    assert failed.value.status_code == 502


async def test_a_refused_key_is_an_upstream_error_that_does_not_quote_it(
    stripe_checkout: CheckoutServer,
):
    settings = stripe_settings(stripe_checkout.url, stripe_secret_key="sk_bad")
    async with Payments(settings) as payments:
        with pytest.raises(UpstreamError, match="TOLLHOUSE_STRIPE_SECRET_KEY") as refused:
            await payments.create_checkout("top_1", Decimal("5"), account_id=ACCOUNT)
    assert refused.value.status_code == 502 and "sk_bad" not in refused.value.message
    assert "Invalid API Key" not in refused.value.message  # Stripe's words quote the key


@pytest.mark.parametrize(
    ("card", "status", "code", "decline"),
    [
        ("pm_card_chargeCustomerFail", "failed", "card_declined", "generic_decline"),
        (
            "pm_card_chargeDeclinedInsufficientFunds",
            "failed",
            "card_declined",
            "insufficient_funds",
        ),
        (
            "pm_card_authenticationRequired",
            "requires_action",
            "authentication_required",
            "authentication_required",
        ),
    ],
)
async def test_a_decline_as_stripe_sends_it_names_its_payment_intent(
    stripe_checkout: CheckoutServer, card: str, status: str, code: str, decline: str
):
    # Stripe's 402 holds the failed PaymentIntent (localstripe's does not): it is kept,
    # and the payment_intent.payment_failed webhook reads as the same failed top-up.
    with Receiver() as receiver:
        stripe_checkout.register_webhook(receiver.url, WEBHOOK_SECRET)
        async with Payments(stripe_settings(stripe_checkout.url)) as payments:
            charge = await payments.charge_off_session(
                "att_9",
                customer="cus_1",
                payment_method=card,
                amount=Decimal("20"),
                account_id=ACCOUNT,
            )
            again = await payments.charge_off_session(
                "att_9",
                customer="cus_1",
                payment_method=card,
                amount=Decimal("20"),
                account_id=ACCOUNT,
            )
        [delivery] = receiver.of_type("payment_intent.payment_failed")
    assert again == charge and (charge.status, charge.failure_code) == (status, code)
    assert charge.decline_code == decline and charge.payment_intent_id is not None
    failed = fact_of(verify(delivery.body, delivery.signature, SecretStr(WEBHOOK_SECRET)))
    assert isinstance(failed, PaymentFailed)
    assert (failed.payment_intent_id, failed.code, failed.decline_code) == (
        charge.payment_intent_id,
        code,
        decline,
    )
    assert failed.key == f"stripe:payment_failed:{charge.payment_intent_id}"
    assert [r["replayed"] for r in stripe_checkout.requests()] == [False, True]


async def test_a_delayed_method_is_processing_until_its_webhook(stripe_checkout: CheckoutServer):
    # localstripe reports its bank debits succeeded at once: the Checkout server's own
    # delayed method stays processing, as a bank debit does on Stripe.
    async with Payments(stripe_settings(stripe_checkout.url)) as payments:
        charge = await payments.charge_off_session(
            "att_10",
            customer="cus_1",
            payment_method="pm_test_processing",
            amount=Decimal("30"),
            account_id=ACCOUNT,
        )
    assert charge.status == "processing" and charge.payment_intent_id is not None


@pytest.mark.parametrize(("status", "answer"), [(429, 429), (500, 502), (503, 502)])
async def test_stripe_failing_is_an_upstream_error(
    stripe_checkout: CheckoutServer, status: int, answer: int
):
    stripe_checkout.call("/_test/faults", statuses=[status])
    async with Payments(stripe_settings(stripe_checkout.url)) as payments:
        with pytest.raises(UpstreamError) as failed:
            await payments.create_customer(ACCOUNT)
    assert failed.value.status_code == answer


async def test_the_library_retries_a_stripe_failure_under_the_same_key(
    stripe_checkout: CheckoutServer,
):
    stripe_checkout.call("/_test/faults", statuses=[500])
    settings = stripe_settings(stripe_checkout.url, stripe_max_network_retries=1)
    async with Payments(settings) as payments:
        charge = await payments.charge_off_session(
            "att_11",
            customer="cus_1",
            payment_method="pm_card_visa",
            amount=Decimal("8"),
            account_id=ACCOUNT,
        )
    assert charge.status == "succeeded"
    sent = stripe_checkout.requests()
    assert [(r["status"], r["idempotency_key"]) for r in sent] == [
        (500, "tollhouse:charge:att_11"),
        (200, "tollhouse:charge:att_11"),
    ]


async def test_a_stripe_that_does_not_answer_is_a_timeout():
    with socket.socket() as silent:  # accepts connections (the backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        async with Payments(stripe_settings(url, stripe_timeout_s=0.3)) as payments:
            with pytest.raises(UpstreamTimeout) as failed:
                await payments.retrieve_checkout("cs_1")
    assert failed.value.status_code == 504


async def test_reading_or_expiring_what_stripe_cannot_is_an_upstream_error(
    stripe_checkout: CheckoutServer,
):
    async with Payments(stripe_settings(stripe_checkout.url)) as payments:
        with pytest.raises(UpstreamError, match="No such session") as missing:
            await payments.retrieve_checkout("cs_missing")
        session = await payments.create_checkout("top_1", Decimal("5"), account_id=ACCOUNT)
        await payments.expire_checkout(session.session_id)
        stripe_checkout.call("/_test/reset")  # forgets the kept answer of the expiry
        with pytest.raises(UpstreamError, match="No such session"):
            await payments.expire_checkout(session.session_id)
    assert missing.value.status_code == 404


def test_a_charge_stripe_answers_as_not_paid_without_an_error_is_a_failed_charge():
    """A PaymentIntent answered 200 in a state that is neither paid, processing nor
    waiting for its owner: a failure, with Stripe's last error when it gave one."""
    declined = {"code": "card_declined", "message": "Declined.", "decline_code": "do_not_honor"}
    with_error = stripe.PaymentIntent.construct_from(
        {"id": "pi_1", "status": "requires_payment_method", "last_payment_error": declined},
        SECRET_KEY,
    )
    assert _charged(with_error) == Charge(
        "pi_1", "failed", "card_declined", "Declined.", "do_not_honor"
    )
    canceled = stripe.PaymentIntent.construct_from(
        {"id": "pi_2", "status": "canceled", "last_payment_error": None}, SECRET_KEY
    )
    assert _charged(canceled) == Charge("pi_2", "failed", "canceled", "the payment is canceled")


def test_an_expanded_payment_intent_of_a_session_stands_for_its_id():
    fields = {"id": "cs_1", "url": None, "expires_at": 1_900_000_000, "status": "complete"}
    fields |= {"payment_status": "paid", "amount_total": 1050}
    session = stripe.checkout.Session.construct_from(
        fields | {"payment_intent": {"id": "pi_9", "object": "payment_intent"}}, SECRET_KEY
    )
    read = _session(session)
    assert (read.payment_intent_id, read.amount, read.url) == ("pi_9", Decimal("10.50"), None)
    unpaid = stripe.checkout.Session.construct_from(fields | {"payment_intent": None}, SECRET_KEY)
    assert _session(unpaid).payment_intent_id is None
