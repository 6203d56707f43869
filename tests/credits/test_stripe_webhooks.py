"""``verify`` and ``fact_of`` on webhooks as the in-repo Checkout server sends them.

Signatures: tampered, stale (older than 300 s), missing or malformed are refused, and so
is a signed body that is not an event. Facts: refunds (one per refund object, never from
``charge.refunded``), failed refunds, disputes and won disputes, events that are not
ours, not in USD or of a type we do not book.
"""

from __future__ import annotations

import logging
import time
from decimal import Decimal
from typing import Any

import orjson
import pytest
from devtools.stripe_checkout import CheckoutServer
from devtools.stripe_wire import sign
from pydantic import SecretStr
from tests.credits.stripe_support import WEBHOOK_SECRET, Receiver, stripe_settings

from tollhouse.credits.stripe import (
    EVENTS,
    Dispute,
    DisputeWon,
    PaymentFailed,
    Payments,
    Purchase,
    Refund,
    RefundFailed,
    fact_of,
    verify,
)
from tollhouse.errors import InvalidJSON, SignatureInvalid, UnprocessableEvent

SECRET = SecretStr(WEBHOOK_SECRET)
OURS = {"tollhouse_account": "acct_7", "tollhouse_topup": "top_1", "tollhouse_flow": "checkout"}


@pytest.fixture
def receiver(stripe_checkout: CheckoutServer):
    with Receiver() as endpoint:
        stripe_checkout.register_webhook(endpoint.url, WEBHOOK_SECRET)
        yield endpoint


def facts(receiver: Receiver, kind: str) -> list[Any]:
    return [fact_of(verify(d.body, d.signature, SECRET)) for d in receiver.of_type(kind)]


async def paid_top_up(server: CheckoutServer, amount: str = "10.00") -> str:
    """A completed Checkout top-up; its PaymentIntent id."""
    async with Payments(stripe_settings(server.url)) as payments:
        session = await payments.create_checkout("top_1", Decimal(amount), account_id="acct_7")
    return str(server.complete(session.session_id)["object"]["payment_intent"])


def signed(body: bytes, timestamp: int | None = None) -> tuple[bytes, str]:
    return body, sign(body, WEBHOOK_SECRET, timestamp)


# -- signatures ------------------------------------------------------------------------


async def test_a_genuine_delivery_verifies(stripe_checkout: CheckoutServer, receiver: Receiver):
    await paid_top_up(stripe_checkout)
    delivery = receiver.of_type("checkout.session.completed")[0]
    event = verify(delivery.body, delivery.signature, SECRET)
    assert event.type == "checkout.session.completed"
    assert event.id == delivery.json()["id"]


async def test_a_tampered_body_or_signature_is_refused(
    stripe_checkout: CheckoutServer, receiver: Receiver
):
    await paid_top_up(stripe_checkout)
    delivery = receiver.of_type("checkout.session.completed")[0]
    assert delivery.signature is not None
    richer = delivery.body.replace(b'"amount_total": 1000', b'"amount_total": 100000')
    assert richer != delivery.body
    t, v1 = delivery.signature.split(",")
    flipped = f"{t},v1={'0' if v1[3] != '0' else '1'}{v1[4:]}"
    for body, header in [
        (richer, delivery.signature),
        (delivery.body, flipped),
        (delivery.body, f"{t},v0={v1[3:]}"),  # no v1 scheme
        (delivery.body, sign(delivery.body, "whsec_someone_else")),
    ]:
        with pytest.raises(SignatureInvalid) as refused:
            verify(body, header, SECRET)
        assert refused.value.status_code == 401
        assert refused.value.param == "Stripe-Signature"


@pytest.mark.parametrize("header", [None, "", "garbage", "t=abc,v1=00", "v1=00"])
def test_a_missing_or_malformed_header_is_refused(header: str | None):
    body = orjson.dumps({"id": "evt_1", "object": "event", "type": "x", "data": {"object": {}}})
    with pytest.raises(SignatureInvalid, match="Stripe-Signature"):
        verify(body, header, SECRET)


async def test_a_signature_older_than_300_seconds_is_refused(
    stripe_checkout: CheckoutServer, receiver: Receiver
):
    await paid_top_up(stripe_checkout)
    event_id = receiver.of_type("checkout.session.completed")[0].json()["id"]
    for age in (290, 301):  # 290: room for the seconds the test itself takes
        stripe_checkout.deliver(event_id, timestamp=int(time.time()) - age)
    recent, stale = receiver.of_type("checkout.session.completed")[1:]
    assert verify(recent.body, recent.signature, SECRET).id == event_id
    with pytest.raises(SignatureInvalid, match="tolerance"):
        verify(stale.body, stale.signature, SECRET)


def test_a_body_that_is_not_utf8_is_refused():
    with pytest.raises(SignatureInvalid, match="UTF-8"):
        verify(*signed(b'{"id": "evt_\xff"}'), SECRET)


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b'"evt"', b"null"])
def test_a_signed_body_that_is_not_an_event_object_is_a_400(body: bytes):
    with pytest.raises(InvalidJSON) as refused:
        verify(*signed(body), SECRET)
    assert refused.value.status_code == 400


@pytest.mark.parametrize(
    "event", [{"object": "event", "type": "x"}, {"object": "event", "id": "evt_1", "type": 5}]
)
def test_a_signed_event_without_id_or_type_is_a_422(event: dict[str, Any]):
    with pytest.raises(UnprocessableEvent):
        verify(*signed(orjson.dumps(event)), SECRET)


@pytest.mark.parametrize("data", [None, {}, {"object": "x"}, {"object": None}])
def test_a_signed_event_without_its_object_is_a_422_whatever_its_type(data: Any):
    event: dict[str, Any] = {"object": "event", "id": "evt_1", "type": "customer.created"}
    if data is not None:
        event["data"] = data
    with pytest.raises(UnprocessableEvent) as refused:
        verify(*signed(orjson.dumps(event)), SECRET)
    assert refused.value.param == "data.object"


# -- what is not booked ----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["customer.created", "invoice.paid", "charge.captured"])
def test_an_event_we_do_not_book_is_acknowledged_and_ignored(
    stripe_checkout: CheckoutServer, receiver: Receiver, kind: str
):
    stripe_checkout.send_event(kind, {"id": "obj_1", "metadata": OURS, "amount": 100})
    assert kind not in EVENTS
    assert facts(receiver, kind) == [None]


def test_payments_that_are_not_ours_are_ignored(
    stripe_checkout: CheckoutServer, receiver: Receiver
):
    session = {"id": "cs_1", "mode": "payment", "payment_status": "paid", "currency": "usd"}
    session |= {"amount_total": 500, "payment_intent": "pi_1", "metadata": {}}
    stripe_checkout.send_event("checkout.session.completed", session)
    stripe_checkout.send_event(
        "payment_intent.succeeded", {"id": "pi_2", "amount": 500, "currency": "usd"}
    )
    assert facts(receiver, "checkout.session.completed") == [None]
    assert facts(receiver, "payment_intent.succeeded") == [None]


def test_money_in_another_currency_is_ignored_with_a_warning(
    stripe_checkout: CheckoutServer, receiver: Receiver, caplog: pytest.LogCaptureFixture
):
    intent = {"id": "pi_1", "amount": 500, "currency": "eur", "metadata": OURS}
    sent = stripe_checkout.send_event("payment_intent.succeeded", intent)
    with caplog.at_level(logging.WARNING, logger="tollhouse.credits"):
        assert facts(receiver, "payment_intent.succeeded") == [None]
    assert sent["events"][0]["id"] in caplog.text and "'eur'" in caplog.text


@pytest.mark.parametrize(
    "change", [{"amount_total": "10.00"}, {"amount_total": -1}, {"payment_intent": 7}]
)
def test_a_purchase_with_malformed_fields_is_never_acknowledged_in_silence(
    stripe_checkout: CheckoutServer, receiver: Receiver, change: dict[str, Any]
):
    session = {"id": "cs_1", "mode": "payment", "payment_status": "paid", "currency": "usd"}
    session |= {"amount_total": 1000, "payment_intent": "pi_1", "metadata": OURS, **change}
    stripe_checkout.send_event("checkout.session.completed", session)
    delivery = receiver.of_type("checkout.session.completed")[0]
    with pytest.raises(UnprocessableEvent) as refused:
        fact_of(verify(delivery.body, delivery.signature, SECRET))
    assert refused.value.status_code == 422


# -- refunds and disputes --------------------------------------------------------------


async def test_each_partial_refund_is_booked_once_from_its_own_refund_object(
    stripe_checkout: CheckoutServer, receiver: Receiver
):
    intent = await paid_top_up(stripe_checkout, "10.00")
    first = stripe_checkout.refund(intent, amount=300)
    second = stripe_checkout.refund(intent, amount=250, times=3)
    refunds = facts(receiver, "refund.created")
    assert len(refunds) == 4 and all(isinstance(r, Refund) for r in refunds)
    assert {(r.refund_id, r.amount, r.payment_intent_id) for r in refunds} == {
        (first["object"]["id"], Decimal("3.00"), intent),
        (second["object"]["id"], Decimal("2.50"), intent),
    }
    assert len({r.key for r in refunds}) == 2
    # charge.refunded carries only the cumulative amount: never booked.
    assert facts(receiver, "charge.refunded") == [None] * 4
    charges = [d.json()["data"]["object"] for d in receiver.of_type("charge.refunded")]
    cumulative = [charge["amount_refunded"] for charge in charges]
    assert cumulative == [300, 550, 550, 550]


async def test_a_failed_refund_gives_its_amount_back_once(
    stripe_checkout: CheckoutServer, receiver: Receiver
):
    intent = await paid_top_up(stripe_checkout)
    refund = stripe_checkout.refund(intent, amount=400)["object"]
    stripe_checkout.call(f"/_test/refunds/{refund['id']}/fail")
    [updated] = facts(receiver, "refund.updated")
    [failed] = facts(receiver, "refund.failed")
    assert isinstance(failed, RefundFailed) and failed.amount == Decimal("4.00")
    assert isinstance(updated, RefundFailed) and updated.key == failed.key
    assert failed.key == f"stripe:refund_failed:{refund['id']}"


async def test_a_dispute_takes_the_money_and_a_won_one_gives_it_back(
    stripe_checkout: CheckoutServer, receiver: Receiver
):
    intent = await paid_top_up(stripe_checkout, "20.00")
    dispute = stripe_checkout.dispute(intent)["object"]
    [created] = facts(receiver, "charge.dispute.created")
    [withdrawn] = facts(receiver, "charge.dispute.funds_withdrawn")
    assert created == Dispute(
        event_id=created.event_id if created else "",
        payment_intent_id=intent,
        charge_id=dispute["charge"],
        dispute_id=dispute["id"],
        amount=Decimal("20.00"),
    )
    assert isinstance(withdrawn, Dispute) and withdrawn.key == created.key
    stripe_checkout.call(f"/_test/disputes/{dispute['id']}/close", status="won")
    [won] = facts(receiver, "charge.dispute.closed")
    assert isinstance(won, DisputeWon) and won.amount == Decimal("20.00")
    assert won.key == f"stripe:dispute_won:{dispute['id']}" != created.key


async def test_a_lost_dispute_and_an_inquiry_move_nothing(
    stripe_checkout: CheckoutServer, receiver: Receiver
):
    intent = await paid_top_up(stripe_checkout)
    lost = stripe_checkout.dispute(intent)["object"]
    stripe_checkout.call(f"/_test/disputes/{lost['id']}/close", status="lost")
    inquiry = stripe_checkout.dispute(intent, status="warning_needs_response")["object"]
    stripe_checkout.call(f"/_test/disputes/{inquiry['id']}/close", status="warning_closed")
    created = facts(receiver, "charge.dispute.created")
    assert [type(f) for f in created] == [Dispute, type(None)]
    assert facts(receiver, "charge.dispute.closed") == [None, None]


async def test_refunds_and_disputes_without_a_payment_intent_are_not_top_ups(
    stripe_checkout: CheckoutServer, receiver: Receiver
):
    refund = {"id": "re_1", "amount": 100, "currency": "usd", "status": "succeeded"}
    stripe_checkout.send_event("refund.created", refund | {"charge": "ch_1"})
    stripe_checkout.send_event("charge.dispute.created", {"id": "dp_1", "amount": 100})
    assert facts(receiver, "refund.created") == [None]
    assert facts(receiver, "charge.dispute.created") == [None]


async def test_every_event_we_book_has_a_reader():
    assert set(EVENTS) == {
        "checkout.session.completed",
        "checkout.session.async_payment_succeeded",
        "checkout.session.async_payment_failed",
        "checkout.session.expired",
        "payment_intent.succeeded",
        "payment_intent.payment_failed",
        "refund.created",
        "refund.updated",
        "refund.failed",
        "charge.dispute.created",
        "charge.dispute.funds_withdrawn",
        "charge.dispute.closed",
    }
    assert Purchase.__dataclass_params__.frozen  # type: ignore[attr-defined]


USD_REFUND = {"id": "re_1", "amount": 100, "currency": "usd", "payment_intent": "pi_1"}


@pytest.mark.parametrize(
    ("kind", "obj"),
    [
        # Checkout Sessions: not in USD, not ours, not in payment mode, nothing to pay.
        ("checkout.session.completed", {"id": "cs_1", "payment_status": "paid", "currency": "eur",
                                        "amount_total": 100, "metadata": OURS}),
        ("checkout.session.expired", {"id": "cs_1", "metadata": {}}),
        ("checkout.session.completed", {"id": "cs_1", "mode": "subscription", "metadata": OURS}),
        ("checkout.session.completed", {"id": "cs_1", "payment_status": "no_payment_required",
                                        "metadata": OURS}),
        # An auto top-up's PaymentIntent fails only for our auto top-ups.
        ("payment_intent.payment_failed", {"id": "pi_1", "metadata": {}}),
        # Refunds: not in USD, still pending -> succeeded, created already failed.
        ("refund.created", USD_REFUND | {"currency": "gbp", "status": "succeeded"}),
        ("refund.updated", USD_REFUND | {"status": "succeeded"}),
        ("refund.created", USD_REFUND | {"status": "failed"}),
    ],
)  # fmt: skip
def test_events_of_booked_types_that_move_nothing(
    stripe_checkout: CheckoutServer, receiver: Receiver, kind: str, obj: dict[str, Any]
):
    stripe_checkout.send_event(kind, obj)
    assert facts(receiver, kind) == [None]


def test_an_expanded_payment_intent_stands_for_its_id(
    stripe_checkout: CheckoutServer, receiver: Receiver
):
    session = {"id": "cs_1", "mode": "payment", "payment_status": "paid", "currency": "usd"}
    session |= {"amount_total": 1999, "metadata": OURS, "payment_intent": {"id": "pi_9"}}
    stripe_checkout.send_event("checkout.session.completed", session)
    [bought] = facts(receiver, "checkout.session.completed")
    assert isinstance(bought, Purchase)
    assert (bought.payment_intent_id, bought.amount) == ("pi_9", Decimal("19.99"))


def test_an_event_whose_object_is_not_an_object_is_a_422():
    event = {"id": "evt_1", "object": "event", "type": "refund.created", "data": {"object": 5}}
    with pytest.raises(UnprocessableEvent, match="data.object"):
        fact_of(verify(*signed(orjson.dumps(event)), SECRET))


def test_an_auto_top_up_that_fails_names_the_decline(
    stripe_checkout: CheckoutServer, receiver: Receiver
):
    intent = {"id": "pi_1", "amount": 500, "currency": "usd"}
    intent["metadata"] = OURS | {"tollhouse_flow": "auto", "tollhouse_topup": "att_1"}
    intent["last_payment_error"] = {
        "code": "card_declined",
        "decline_code": "insufficient_funds",
        "message": "Your card has insufficient funds.",
    }
    stripe_checkout.send_event("payment_intent.payment_failed", intent)
    [failed] = facts(receiver, "payment_intent.payment_failed")
    assert isinstance(failed, PaymentFailed)
    assert (failed.topup_id, failed.code, failed.decline_code) == (
        "att_1",
        "card_declined",
        "insufficient_funds",
    )
    assert failed.key == "stripe:payment_failed:pi_1"
