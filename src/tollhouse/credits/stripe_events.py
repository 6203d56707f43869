"""What Stripe tells us: signed webhooks, verified, and the facts the credit journal books.

``verify(payload, signature_header, secret)`` checks ``Stripe-Signature`` with the official
library's ``stripe.Webhook.construct_event`` (300 s tolerance) and returns the event;
``fact_of(event)`` turns it into one typed fact, or ``None``:

====================================================  ==============================
event                                                 fact
====================================================  ==============================
``checkout.session.completed`` (``payment_status``    ``Purchase(source="checkout")``
paid), ``checkout.session.async_payment_succeeded``
``payment_intent.succeeded`` (ours)                   ``Purchase(source="payment_intent")``
``payment_intent.payment_failed`` (an auto top-up),   ``PaymentFailed``
``checkout.session.async_payment_failed``,
``checkout.session.expired``
``refund.created``                                    ``Refund`` (one per refund object)
``refund.failed``, ``refund.updated`` (failed or      ``RefundFailed`` (gives it back)
canceled)
``charge.dispute.created`` (not an inquiry),           ``Dispute``
``charge.dispute.funds_withdrawn``
``charge.dispute.closed`` (``won``)                   ``DisputeWon`` (gives it back)
anything else, and whatever is not ours               ``None``: acknowledged, ignored
====================================================  ==============================

**Booked once.** Each fact has a ``key``, the unique key of the journal movement it
makes: a purchase is keyed by its PaymentIntent (the same payment arrives as
``checkout.session.completed`` *and* ``payment_intent.succeeded``, and Stripe delivers
any event more than once), a refund by its refund object, a dispute by its dispute. The
journal inserts the event id and the key in the transaction that books the money, and
books nothing when either was seen. ``charge.refunded`` is not booked: it carries only
the charge's cumulative ``amount_refunded``, so each partial refund is booked from its own
``refund.created`` instead (sent for every refund since API version 2024-10-28).

**Ours.** A Checkout Session or PaymentIntent is a top-up when its metadata names a
``tollhouse_account`` (``Payments`` sets it, with ``tollhouse_topup`` and
``tollhouse_flow``); other payments on the same Stripe account are ignored. A failed
*Checkout* PaymentIntent is not a failed top-up (the payer may try another card on the
page): the session's own events end it. Refunds and disputes name only a PaymentIntent;
whether it was a top-up is the journal's question (an unknown one is not booked).

**Currency.** Every top-up is in USD. An event whose money is in another currency
cannot be one of ours; it is acknowledged (``None``) with a warning in the log, since
refusing it would only make Stripe retry it for three days. A verified event of a type
we book whose fields are missing or of the wrong type is an ``UnprocessableEvent``
(422): never acknowledged in silence, so Stripe retries it and the log says why.

Amounts are exact: integer cents become ``Decimal`` dollars (``1050`` -> ``10.50``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Literal

import stripe
from pydantic import SecretStr

from tollhouse.errors import InvalidJSON, SignatureInvalid, UnprocessableEvent

log = logging.getLogger("tollhouse.credits")

CURRENCY = "usd"
TOLERANCE_S = 300  # Stripe's default: a signature older than this is refused (replays)
SIGNATURE_HEADER = "Stripe-Signature"
# Metadata Tollhouse sets on its Checkout Sessions and PaymentIntents.
META_ACCOUNT = "tollhouse_account"
META_TOPUP = "tollhouse_topup"
META_FLOW = "tollhouse_flow"  # "checkout" or "auto"

Source = Literal["checkout", "payment_intent"]


@dataclass(frozen=True, slots=True)
class Purchase:
    """Money in: a top-up paid. Booked once per PaymentIntent. ``event_id`` is ``None``
    when it is booked from Stripe's answer to our own charge (an auto top-up)."""

    event_id: str | None
    payment_intent_id: str
    amount: Decimal
    account_id: str
    topup_id: str | None
    source: Source
    session_id: str | None = None

    @property
    def key(self) -> str:
        return f"stripe:purchase:{self.payment_intent_id}"


@dataclass(frozen=True, slots=True)
class PaymentFailed:
    """A top-up that did not pay: an auto top-up declined, a delayed Checkout payment that
    failed, a Checkout Session that expired. No money moves; the attempt is recorded."""

    event_id: str
    payment_intent_id: str | None
    account_id: str
    topup_id: str | None
    code: str
    message: str
    session_id: str | None = None
    decline_code: str | None = None  # the issuer's reason, when a card was declined

    @property
    def key(self) -> str:
        target = self.payment_intent_id or self.session_id or self.event_id
        return f"stripe:payment_failed:{target}"


@dataclass(frozen=True, slots=True)
class Refund:
    """Money out: part or all of a payment refunded. Booked once per refund object."""

    event_id: str
    payment_intent_id: str
    charge_id: str | None
    refund_id: str
    amount: Decimal

    @property
    def key(self) -> str:
        return f"stripe:refund:{self.refund_id}"


@dataclass(frozen=True, slots=True)
class RefundFailed:
    """A refund that did not go through: its amount comes back. Once per refund."""

    event_id: str
    payment_intent_id: str
    charge_id: str | None
    refund_id: str
    amount: Decimal

    @property
    def key(self) -> str:
        return f"stripe:refund_failed:{self.refund_id}"


@dataclass(frozen=True, slots=True)
class Dispute:
    """Money out: a chargeback withdrew the disputed amount. Once per dispute."""

    event_id: str
    payment_intent_id: str
    charge_id: str | None
    dispute_id: str
    amount: Decimal

    @property
    def key(self) -> str:
        return f"stripe:dispute:{self.dispute_id}"


@dataclass(frozen=True, slots=True)
class DisputeWon:
    """A dispute closed in our favour: the amount comes back. Once per dispute."""

    event_id: str
    payment_intent_id: str
    charge_id: str | None
    dispute_id: str
    amount: Decimal

    @property
    def key(self) -> str:
        return f"stripe:dispute_won:{self.dispute_id}"


Fact = Purchase | PaymentFailed | Refund | RefundFailed | Dispute | DisputeWon


def from_cents(cents: int) -> Decimal:
    """Integer cents as exact dollars: ``1050`` -> ``Decimal("10.50")``."""
    return Decimal(cents).scaleb(-2)


def verify(payload: bytes, signature_header: str | None, secret: SecretStr) -> stripe.Event:
    """The event ``payload`` holds, once its ``Stripe-Signature`` is checked against the
    endpoint's signing secret.

    ``SignatureInvalid`` (401) when the header is missing, malformed, stale (older than
    300 s) or does not match; ``InvalidJSON`` (400) when a signed body is not a JSON event
    object; ``UnprocessableEvent`` (422) when it lacks an id, a type or an object."""
    if not signature_header:
        raise SignatureInvalid(f"missing {SIGNATURE_HEADER} header", param=SIGNATURE_HEADER)
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise SignatureInvalid(
            f"the body is not UTF-8, so no {SIGNATURE_HEADER} can match it",
            param=SIGNATURE_HEADER,
        ) from None
    try:
        event: stripe.Event = stripe.Webhook.construct_event(
            text, signature_header, secret.get_secret_value(), tolerance=TOLERANCE_S
        )
    except stripe.SignatureVerificationError as exc:
        # The library's messages name what failed (no match, stale timestamp, bad header)
        # and never the secret.
        raise SignatureInvalid(
            f"{SIGNATURE_HEADER}: {exc.user_message}", param=SIGNATURE_HEADER
        ) from None
    except (ValueError, AttributeError, TypeError):
        # json.loads failing, a thin event, or JSON that is not an object at all.
        raise InvalidJSON("the signed body is not a Stripe event object") from None
    fields = event.to_dict(recursive=False)
    event_id, kind = fields.get("id"), fields.get("type")
    if not isinstance(event_id, str) or not event_id or not isinstance(kind, str) or not kind:
        raise UnprocessableEvent("a Stripe event needs an id and a type", param="id")
    data = event.to_dict().get("data")  # recursive: the library's objects as plain dicts
    if not isinstance(data, dict) or not isinstance(data.get("object"), dict):
        # Every Stripe event carries one; one without is not Stripe's, whatever its type.
        raise UnprocessableEvent(f"{kind}: data.object must be an object", param="data.object")
    return event


def fact_of(event: stripe.Event) -> Fact | None:
    """The fact ``event`` states for the credit journal, or ``None`` (see the module)."""
    data = event.to_dict()
    kind = data.get("type")
    reader = _READERS.get(kind) if isinstance(kind, str) else None
    if reader is None:
        log.debug("stripe event %s of type %s ignored", data.get("id"), kind)
        return None
    body = data.get("data")
    obj = body.get("object") if isinstance(body, dict) else None
    if not isinstance(obj, dict):
        raise UnprocessableEvent(f"{kind}: data.object must be an object", param="data.object")
    return reader(_Event(str(data["id"]), str(kind), obj))


@dataclass(frozen=True, slots=True)
class _Event:
    id: str
    type: str
    obj: dict[str, Any]

    def text(self, name: str, *, required: bool = False) -> str | None:
        """``obj[name]`` as a string; an expanded object stands for its id."""
        value = self.obj.get(name)
        if isinstance(value, dict):
            value = value.get("id")
        if value is None and not required:
            return None
        if not isinstance(value, str) or not value:
            raise UnprocessableEvent(f"{self.type}: {name} must be a string", param=name)
        return value

    def cents(self, name: str) -> int:
        value = self.obj.get(name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise UnprocessableEvent(f"{self.type}: {name} must be whole cents", param=name)
        return value

    def metadata(self) -> dict[str, Any]:
        value = self.obj.get("metadata")
        return value if isinstance(value, dict) else {}

    def in_usd(self) -> bool:
        currency = self.obj.get("currency")
        if isinstance(currency, str) and currency.lower() == CURRENCY:
            return True
        log.warning(
            "stripe event %s (%s) ignored: its currency is %r, top-ups are in %s",
            self.id,
            self.type,
            currency,
            CURRENCY,
        )
        return False


def _account(event: _Event) -> str | None:
    """The account a Checkout Session or PaymentIntent tops up, when it is ours."""
    account = event.metadata().get(META_ACCOUNT)
    if isinstance(account, str) and account:
        return account
    log.debug("stripe event %s (%s) is not a Tollhouse top-up", event.id, event.type)
    return None


def _topup(event: _Event) -> str | None:
    topup = event.metadata().get(META_TOPUP)
    return topup if isinstance(topup, str) and topup else None


def _session_paid(event: _Event) -> Fact | None:
    account = _account(event)
    if account is None or event.obj.get("mode") not in (None, "payment"):
        return None
    if event.obj.get("payment_status") != "paid":
        # Delayed methods (bank debits) complete unpaid; async_payment_succeeded follows.
        return None
    if not event.in_usd():
        return None
    return Purchase(
        event_id=event.id,
        payment_intent_id=str(event.text("payment_intent", required=True)),
        amount=from_cents(event.cents("amount_total")),
        account_id=account,
        topup_id=event.text("client_reference_id") or _topup(event),
        source="checkout",
        session_id=event.text("id"),
    )


def _session_failed(event: _Event) -> Fact | None:
    account = _account(event)
    if account is None:
        return None
    expired = event.type == "checkout.session.expired"
    return PaymentFailed(
        event_id=event.id,
        payment_intent_id=event.text("payment_intent"),
        account_id=account,
        topup_id=event.text("client_reference_id") or _topup(event),
        code="expired" if expired else "async_payment_failed",
        message="the Checkout Session expired unpaid"
        if expired
        else "the delayed payment of the Checkout Session failed",
        session_id=event.text("id"),
    )


def _intent_succeeded(event: _Event) -> Fact | None:
    account = _account(event)
    if account is None or not event.in_usd():
        return None
    received = event.obj.get("amount_received")
    cents = event.cents("amount_received" if received is not None else "amount")
    return Purchase(
        event_id=event.id,
        payment_intent_id=str(event.text("id", required=True)),
        amount=from_cents(cents),
        account_id=account,
        topup_id=_topup(event),
        source="payment_intent",
    )


def _intent_failed(event: _Event) -> Fact | None:
    account = _account(event)
    if account is None or event.metadata().get(META_FLOW) == "checkout":
        return None
    error = event.obj.get("last_payment_error")
    error = error if isinstance(error, dict) else {}
    decline = error.get("decline_code")
    return PaymentFailed(
        event_id=event.id,
        payment_intent_id=event.text("id", required=True),
        account_id=account,
        topup_id=_topup(event),
        code=str(error.get("code") or "payment_failed"),
        message=str(error.get("message") or "the payment failed"),
        decline_code=decline if isinstance(decline, str) else None,
    )


def _money_back(event: _Event) -> tuple[str, str | None, Decimal] | None:
    """The PaymentIntent, charge and amount of a refund or a dispute, when they count."""
    intent = event.text("payment_intent")
    if intent is None:
        log.debug("stripe event %s (%s) names no PaymentIntent", event.id, event.type)
        return None
    if not event.in_usd():
        return None
    return intent, event.text("charge"), from_cents(event.cents("amount"))


def _refund(event: _Event) -> Fact | None:
    status = event.obj.get("status")
    failed = event.type == "refund.failed" or status in ("failed", "canceled")
    if event.type == "refund.updated" and not failed:
        return None  # pending -> succeeded changes nothing: it was booked when created
    found = _money_back(event)
    if found is None:
        return None
    intent, charge, amount = found
    refund_id = str(event.text("id", required=True))
    if failed:
        if event.type == "refund.created":
            return None  # born failed: never booked, nothing to give back
        return RefundFailed(event.id, intent, charge, refund_id, amount)
    return Refund(event.id, intent, charge, refund_id, amount)


def _dispute(event: _Event) -> Fact | None:
    status = event.obj.get("status")
    if isinstance(status, str) and status.startswith("warning_"):
        return None  # an inquiry: no funds are withdrawn
    if event.type == "charge.dispute.closed" and status != "won":
        return None  # lost: the money left when the dispute was created
    found = _money_back(event)
    if found is None:
        return None
    intent, charge, amount = found
    dispute_id = str(event.text("id", required=True))
    if event.type == "charge.dispute.closed":
        return DisputeWon(event.id, intent, charge, dispute_id, amount)
    return Dispute(event.id, intent, charge, dispute_id, amount)


_READERS: dict[str, Callable[[_Event], Fact | None]] = {
    "checkout.session.completed": _session_paid,
    "checkout.session.async_payment_succeeded": _session_paid,
    "checkout.session.async_payment_failed": _session_failed,
    "checkout.session.expired": _session_failed,
    "payment_intent.succeeded": _intent_succeeded,
    "payment_intent.payment_failed": _intent_failed,
    "refund.created": _refund,
    "refund.updated": _refund,
    "refund.failed": _refund,
    "charge.dispute.created": _dispute,
    "charge.dispute.funds_withdrawn": _dispute,
    "charge.dispute.closed": _dispute,
}
# The events to enable on the Stripe webhook endpoint (docs/stripe.md).
EVENTS = tuple(sorted(_READERS))
