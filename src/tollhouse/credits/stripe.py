"""Stripe top-ups: Checkout Sessions and off-session auto top-up charges (``Payments``).

Everything goes through the official ``stripe`` library's async client
(``StripeClient(..., http_client=stripe.AIOHTTPClient())``, ``*_async`` calls over the
aiohttp Tollhouse already runs on), so no call blocks the event loop. ``Payments`` is
built once from ``Settings`` (``stripe_secret_key``, ``stripe_api_base``,
``stripe_success_url``, …) and closed with ``aclose()``.

- **Amounts** are USD ``Decimal`` dollars, sent as integer cents exactly: an amount that
  is not a whole number of cents, below Stripe's smallest charge (0.50) or above its
  largest (999,999.99) is a ``ValidationFailed`` before anything is sent.
- **Idempotency**: every write carries an ``Idempotency-Key`` derived from *our* id
  (``tollhouse:checkout:<topup id>``, ``tollhouse:charge:<attempt id>``,
  ``tollhouse:customer:<account id>``), never from a clock or a random draw: a retry
  of the same top-up, by us or by the library after a network error, cannot pay twice.
  Stripe keeps a key for 24 hours and refuses it with other parameters; the parameters
  are therefore a function of our ids and amounts alone (``expires_at`` is passed in,
  e.g. the top-up's creation time plus an hour, not computed from "now").
- **Ours**: the metadata ``tollhouse_account``, ``tollhouse_topup`` and
  ``tollhouse_flow`` (``checkout`` or ``auto``) on every Checkout Session and
  PaymentIntent is how ``fact_of`` recognises our payments in webhooks.
- **Declines are results**: ``charge_off_session`` answers a ``Charge`` whose status is
  ``failed`` (or ``requires_action`` when the bank wants the customer present); only a
  Stripe that cannot be reached or refuses our key raises (``UpstreamError``, 502, or
  ``UpstreamTimeout``, 504).
- **Secrets**: the secret key lives in the client; ``repr`` shows the API base only, and
  nothing here logs a key, a header or a webhook secret.

Webhooks are read by ``stripe_events`` (``verify``, ``fact_of`` and the facts), re-exported
here.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

import aiohttp
import stripe

from tollhouse.config import Settings
from tollhouse.credits.stripe_events import (
    CURRENCY,
    EVENTS,
    META_ACCOUNT,
    META_FLOW,
    META_TOPUP,
    Dispute,
    DisputeWon,
    Fact,
    PaymentFailed,
    Purchase,
    Refund,
    RefundFailed,
    fact_of,
    from_cents,
    verify,
)
from tollhouse.errors import (
    ConfigError,
    ServiceUnavailable,
    TollhouseError,
    UpstreamError,
    UpstreamTimeout,
    ValidationFailed,
)
from tollhouse.money import format_usd

if TYPE_CHECKING:
    from stripe.params import CustomerCreateParams, PaymentIntentCreateParams
    from stripe.params.checkout import SessionCreateParams

__all__ = [
    "EVENTS",
    "Charge",
    "CheckoutSession",
    "Dispute",
    "DisputeWon",
    "Fact",
    "PaymentFailed",
    "Payments",
    "Purchase",
    "Refund",
    "RefundFailed",
    "fact_of",
    "from_cents",
    "idempotency_key",
    "to_cents",
    "verify",
]

log = logging.getLogger("tollhouse.credits")

MIN_CENTS = 50  # Stripe's smallest USD charge
MAX_CENTS = 99_999_999  # its largest: eight digits of cents
_OUR_ID = re.compile(r"[A-Za-z0-9_.:-]{1,200}")

ChargeStatus = Literal["succeeded", "processing", "requires_action", "failed"]


@dataclass(frozen=True, slots=True)
class CheckoutSession:
    """A Checkout Session as Stripe answered: send the payer to ``url`` (``None`` once
    the session is complete or expired)."""

    session_id: str
    url: str | None
    expires_at: datetime
    status: str  # open, complete, expired
    payment_status: str  # unpaid, paid, no_payment_required
    payment_intent_id: str | None
    amount: Decimal


@dataclass(frozen=True, slots=True)
class Charge:
    """The outcome of an off-session charge. ``processing``: a delayed method, whose
    ``payment_intent.succeeded`` or ``…payment_failed`` webhook says how it ends."""

    payment_intent_id: str | None
    status: ChargeStatus
    failure_code: str | None = None
    failure_message: str | None = None
    decline_code: str | None = None


def to_cents(amount: Decimal) -> int:
    """``amount`` USD as integer cents, exactly (``Decimal("10.50")`` -> ``1050``);
    ``ValidationFailed`` unless it is whole cents from 0.50 to 999,999.99."""
    if not isinstance(amount, Decimal) or not amount.is_finite():
        raise ValidationFailed("amount must be a finite number of dollars", param="amount")
    cents = amount.scaleb(2)
    if cents != cents.to_integral_value():
        raise ValidationFailed(
            f"amount {format_usd(amount)} is not a whole number of cents", param="amount"
        )
    if cents < MIN_CENTS or cents > MAX_CENTS:
        raise ValidationFailed(
            f"amount {format_usd(amount)} is outside what Stripe charges in USD: "
            f"{format_usd(from_cents(MIN_CENTS))} to {format_usd(from_cents(MAX_CENTS))}",
            param="amount",
        )
    return int(cents)


def idempotency_key(action: str, our_id: str) -> str:
    """The ``Idempotency-Key`` of a Stripe write: the action and our id, nothing else."""
    return f"tollhouse:{action}:{our_id}"


def _check_id(name: str, value: str) -> str:
    if not isinstance(value, str) or _OUR_ID.fullmatch(value) is None:
        raise ValidationFailed(
            f"{name} must be 1 to 200 letters, digits or _.:-", param=name.replace(" ", "_")
        )
    return value


class Payments:
    """The Stripe API calls of top-ups, over one async HTTP client (close it)."""

    def __init__(self, settings: Settings, *, checkout: bool = True) -> None:
        """``checkout=False``: for off-session charges only (auto top-ups), which need no
        page to return to; ``create_checkout`` is then refused."""
        key = settings.stripe_secret_key
        if key is None:
            raise ConfigError("Stripe top-ups need TOLLHOUSE_STRIPE_SECRET_KEY (sk_… or rk_…)")
        if checkout and settings.stripe_success_url is None:
            raise ConfigError(
                "Stripe Checkout top-ups need TOLLHOUSE_STRIPE_SUCCESS_URL, the page payers "
                "return to"
            )
        self.api_base = (settings.stripe_api_base or stripe.DEFAULT_API_BASE).rstrip("/")
        self._success_url = settings.stripe_success_url
        self._cancel_url = settings.stripe_cancel_url
        self._product = settings.stripe_product_name
        self._http = stripe.AIOHTTPClient(
            timeout=aiohttp.ClientTimeout(total=settings.stripe_timeout_s)
        )
        self._client = stripe.StripeClient(
            key.get_secret_value(),
            base_addresses={"api": self.api_base},
            http_client=self._http,
            max_network_retries=settings.stripe_max_network_retries,
        )

    def __repr__(self) -> str:
        return f"Payments(api_base={self.api_base!r})"

    async def aclose(self) -> None:
        await self._http.close_async()  # type: ignore[no-untyped-call]

    async def __aenter__(self) -> Payments:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def create_checkout(
        self,
        topup_id: str,
        amount: Decimal,
        *,
        account_id: str,
        customer: str | None = None,
        expires_at: datetime | None = None,
        save_payment_method: bool = False,
    ) -> CheckoutSession:
        """A hosted Checkout Session (``mode=payment``) for ``amount`` USD, its
        ``client_reference_id`` our top-up id. ``expires_at`` must be 30 minutes to 24
        hours ahead (Stripe's rule; unset: 24 hours). ``save_payment_method`` keeps the
        card for auto top-ups (``setup_future_usage=off_session``), on ``customer`` or on
        a customer Stripe creates."""
        if self._success_url is None:
            raise ServiceUnavailable(
                "Stripe Checkout top-ups need TOLLHOUSE_STRIPE_SUCCESS_URL, the page payers "
                "return to"
            )
        cents = to_cents(amount)
        _check_id("topup_id", topup_id)
        _check_id("account_id", account_id)
        metadata = {META_ACCOUNT: account_id, META_TOPUP: topup_id, META_FLOW: "checkout"}
        params: SessionCreateParams = {
            "mode": "payment",
            "line_items": [
                {
                    "price_data": {
                        "currency": CURRENCY,
                        "unit_amount": cents,
                        "product_data": {"name": self._product},
                    },
                    "quantity": 1,
                }
            ],
            "success_url": self._success_url,
            "client_reference_id": topup_id,
            "metadata": metadata,
            "payment_intent_data": {"metadata": dict(metadata)},
        }
        if self._cancel_url is not None:
            params["cancel_url"] = self._cancel_url
        if customer is not None:
            params["customer"] = _check_id("customer", customer)
        if expires_at is not None:
            if expires_at.tzinfo is None:
                raise ValidationFailed("expires_at needs a time zone", param="expires_at")
            params["expires_at"] = int(expires_at.timestamp())
        if save_payment_method:
            params["payment_intent_data"]["setup_future_usage"] = "off_session"
            if customer is None:
                params["customer_creation"] = "always"
        action = "create a Checkout Session"
        try:
            session = await self._client.v1.checkout.sessions.create_async(
                params, {"idempotency_key": idempotency_key("checkout", topup_id)}
            )
        except stripe.StripeError as exc:
            raise self._failure(exc, action) from None
        return _session(session)

    async def retrieve_checkout(self, session_id: str) -> CheckoutSession:
        """A Checkout Session as it is now (a top-up page polling, a reconciliation)."""
        try:
            session = await self._client.v1.checkout.sessions.retrieve_async(
                _check_id("session_id", session_id)
            )
        except stripe.StripeError as exc:
            raise self._failure(exc, "read a Checkout Session") from None
        return _session(session)

    async def expire_checkout(self, session_id: str) -> CheckoutSession:
        """Close an open Checkout Session so that it can no longer be paid."""
        _check_id("session_id", session_id)
        try:
            session = await self._client.v1.checkout.sessions.expire_async(
                session_id, options={"idempotency_key": idempotency_key("expire", session_id)}
            )
        except stripe.StripeError as exc:
            raise self._failure(exc, "expire a Checkout Session") from None
        return _session(session)

    async def create_customer(self, account_id: str, *, email: str | None = None) -> str:
        """A Stripe customer for ``account_id`` (its id), to keep a card for auto top-ups.
        The key is the account's: within 24 hours, asking again answers the same one."""
        params: CustomerCreateParams = {
            "metadata": {META_ACCOUNT: _check_id("account_id", account_id)}
        }
        if email is not None:
            params["email"] = email
        try:
            customer = await self._client.v1.customers.create_async(
                params, {"idempotency_key": idempotency_key("customer", account_id)}
            )
        except stripe.StripeError as exc:
            raise self._failure(exc, "create a customer") from None
        return str(customer.id)

    async def charge_off_session(
        self,
        attempt_id: str,
        *,
        customer: str,
        payment_method: str,
        amount: Decimal,
        account_id: str,
    ) -> Charge:
        """Charge a saved card without the customer present (an auto top-up); one
        ``attempt_id`` is one charge however often it is retried. A decline, a card that
        needs its owner (``requires_action``) or a payment method Stripe will not use is
        a ``Charge``; Stripe unreachable or our key refused raise."""
        cents = to_cents(amount)
        _check_id("attempt_id", attempt_id)
        params: PaymentIntentCreateParams = {
            "amount": cents,
            "currency": CURRENCY,
            "customer": _check_id("customer", customer),
            "payment_method": _check_id("payment_method", payment_method),
            "off_session": True,
            "confirm": True,
            "metadata": {
                META_ACCOUNT: _check_id("account_id", account_id),
                META_TOPUP: attempt_id,
                META_FLOW: "auto",
            },
        }
        try:
            intent = await self._client.v1.payment_intents.create_async(
                params, {"idempotency_key": idempotency_key("charge", attempt_id)}
            )
        except stripe.CardError as exc:
            return _declined(exc)
        except stripe.IdempotencyError as exc:
            raise self._failure(exc, "charge the saved card") from None
        except stripe.InvalidRequestError as exc:
            # A detached card, a deleted customer: this card cannot be charged.
            return Charge(None, "failed", exc.code or "invalid_request", exc.user_message)
        except stripe.StripeError as exc:
            raise self._failure(exc, "charge the saved card") from None
        return _charged(intent)

    def _failure(self, exc: stripe.StripeError, action: str) -> TollhouseError:
        """Our error for a Stripe call that failed; Stripe's key-related messages (which
        quote part of the key) are not passed on."""
        request = f" (Stripe request {exc.request_id})" if exc.request_id else ""
        log.warning("stripe: could not %s: %s%s", action, type(exc).__name__, request)
        if isinstance(exc, stripe.IdempotencyError):
            return ValidationFailed(
                f"could not {action}: its id was sent to Stripe before with other "
                "parameters; use a new id",
                param="id",
            )
        if isinstance(exc, stripe.AuthenticationError | stripe.PermissionError):
            return UpstreamError(
                f"Stripe refused the configured secret key to {action}: check "
                "TOLLHOUSE_STRIPE_SECRET_KEY and its permissions"
            )
        if isinstance(exc, stripe.APIConnectionError):
            if isinstance(exc.__cause__, TimeoutError):
                return UpstreamTimeout(f"Stripe did not answer in time to {action}; retry")
            return UpstreamError(f"could not reach Stripe at {self.api_base} to {action}; retry")
        if isinstance(exc, stripe.RateLimitError):
            return UpstreamError(
                f"Stripe is rate limiting: could not {action}", upstream_status=429
            )
        if isinstance(exc, stripe.InvalidRequestError):
            return UpstreamError(
                f"Stripe refused to {action}: {exc.user_message}",
                upstream_status=exc.http_status or 400,
            )
        return UpstreamError(f"Stripe failed to {action} (HTTP {exc.http_status}){request}")


def _session(session: stripe.checkout.Session) -> CheckoutSession:
    intent: Any = session.payment_intent  # an id, or the PaymentIntent when expanded
    if intent is not None and not isinstance(intent, str):
        intent = str(intent.id)
    return CheckoutSession(
        session_id=str(session.id),
        url=session.url,
        expires_at=datetime.fromtimestamp(int(session.expires_at), UTC),
        status=str(session.status),
        payment_status=str(session.payment_status),
        payment_intent_id=intent,
        amount=from_cents(session.amount_total or 0),
    )


def _charged(intent: stripe.PaymentIntent) -> Charge:
    status = intent.status
    if status == "succeeded":
        return Charge(intent.id, "succeeded")
    if status == "processing":
        return Charge(intent.id, "processing")
    if status == "requires_action":
        return Charge(
            intent.id,
            "requires_action",
            "authentication_required",
            "the bank asks the card holder to authenticate this payment",
        )
    error = intent.last_payment_error
    return Charge(
        intent.id,
        "failed",
        (error.code if error is not None else None) or status,
        (error.message if error is not None else None) or f"the payment is {status}",
        error.decline_code if error is not None else None,
    )


def _declined(exc: stripe.CardError) -> Charge:
    body = exc.json_body if isinstance(exc.json_body, dict) else {}
    found = body.get("error")
    error: dict[str, Any] = found if isinstance(found, dict) else {}
    intent = error.get("payment_intent")
    intent_id = intent.get("id") if isinstance(intent, dict) else intent
    code = exc.code or error.get("code")
    decline = error.get("decline_code")
    needs_owner = "authentication_required" in (code, decline)
    return Charge(
        intent_id if isinstance(intent_id, str) else None,
        "requires_action" if needs_owner else "failed",
        code,
        exc.user_message or error.get("message"),
        decline if isinstance(decline, str) else None,
    )
