"""A loopback stand-in for Stripe Checkout, and for the events that follow a payment.

localstripe has no Checkout Sessions, refund events or disputes, and its declines lack
what Stripe's carry; this small aiohttp server has exactly those, for the tests of
top-ups. It is a real HTTP server that the
official ``stripe`` library talks to (``base_addresses={"api": url}``), form-encoded as
the SDK sends, and it answers like Stripe:

- ``POST /v1/checkout/sessions`` (``mode=payment`` with ``price_data`` line items; the
  parameters Stripe would refuse are refused with its error envelope, unknown ones too),
  ``GET /v1/checkout/sessions/{id}``, ``POST /v1/checkout/sessions/{id}/expire``,
  ``POST /v1/payment_intents`` (off-session charges of Stripe's test cards
  ``pm_card_visa``, ``pm_card_chargeCustomerFail``,
  ``pm_card_chargeDeclinedInsufficientFunds``, ``pm_card_authenticationRequired``, and
  ``pm_test_processing`` of its own for a delayed method; a
  decline is Stripe's 402 ``card_error`` holding the failed PaymentIntent, which
  localstripe's is not), ``GET /v1/payment_intents/{id}``, ``GET /v1/events/{id}``; a
  ``sk_``/``rk_`` bearer key is required; every ``/v1`` call is recorded with its
  ``Idempotency-Key``, and a key is honoured like Stripe's (``devtools.stripe_wire``).
- Webhook endpoints are registered as with localstripe: ``POST /_config/webhooks/{id}``
  (``url``, ``secret``, optional ``events``). Events are signed exactly as Stripe signs
  them and delivered *before* the control call returns, ``times`` copies at once (for
  the "credited once" tests), with the receivers' statuses in the answer.

Test controls (JSON bodies, all optional; each answers ``{"object", "events"}``):

====================================================  =====================================
``POST /_test/checkout/sessions/{id}/complete``        paid (default) or ``{"payment_status":
                                                       "unpaid"}`` for a delayed method:
                                                       ``checkout.session.completed``, then
                                                       ``payment_intent.succeeded`` and
                                                       ``charge.succeeded`` when paid
``POST /_test/checkout/sessions/{id}/succeed``         the delayed payment arrives:
                                                       ``…async_payment_succeeded``
``POST /_test/checkout/sessions/{id}/fail``            it fails: ``…async_payment_failed``,
                                                       ``payment_intent.payment_failed``
``POST /_test/checkout/sessions/{id}/expire``          ``checkout.session.expired``
``POST /_test/payment_intents/{id}/refund``            ``{"amount": cents}`` (default: the
                                                       rest): ``refund.created``,
                                                       ``charge.refunded``
``POST /_test/refunds/{id}/fail``                      ``refund.updated``, ``refund.failed``
``POST /_test/payment_intents/{id}/dispute``           ``{"status": "needs_response"}`` or an
                                                       inquiry (``warning_needs_response``):
                                                       ``charge.dispute.created`` (and
                                                       ``…funds_withdrawn`` unless inquiry)
``POST /_test/disputes/{id}/close``                    ``{"status": "won"|"lost"}``:
                                                       ``charge.dispute.closed``
``POST /_test/events``                                 ``{"type", "object"}``: any event
``POST /_test/faults``                                ``{"statuses": [429, 500]}``: the next
                                                       ``/v1`` calls answer these instead
``POST /_test/events/{id}/deliver``                    the same event again: ``{"times": N,
                                                       "timestamp": unix}`` (an old
                                                       timestamp makes a stale signature)
``GET /_test/requests``, ``GET /_test/events``         what was received and sent
``POST /_test/reset``                                  forget everything
====================================================  =====================================

``CheckoutServer`` runs it on a thread of its own (``tests/conftest.py``);
``python -m devtools.stripe_checkout --port N`` runs it in the foreground. Nothing here
is shipped.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import httpx
from aiohttp import web

from devtools.stripe_wire import (
    Endpoint,
    RequestLog,
    Webhooks,
    event_body,
    stripe_error,
    unflatten,
)

API_VERSION = "2026-10-28.endive"  # the version the stripe library of pyproject pins
MIN_AMOUNT = {"usd": 50}  # Stripe's smallest charge, in cents
MAX_AMOUNT = 99_999_999  # eight digits of the smallest unit
INTENT_PARAMS = {
    "amount", "currency", "customer", "payment_method", "off_session", "confirm", "metadata",
    "description", "expand",
}  # fmt: skip
# Stripe's test cards for off-session charges: None succeeds, else (code, decline, message);
# "processing" is this server's own: a delayed method (a bank debit) that stays pending.
CARDS: dict[str, tuple[str, str, str] | str | None] = {
    "pm_card_visa": None,
    "pm_test_processing": "processing",
    "pm_card_chargeCustomerFail": ("card_declined", "generic_decline", "Your card was declined."),
    "pm_card_chargeDeclinedInsufficientFunds": (
        "card_declined", "insufficient_funds", "Your card has insufficient funds."
    ),
    "pm_card_authenticationRequired": (
        "authentication_required", "authentication_required",
        "Your card was declined. This transaction requires authentication.",
    ),
}  # fmt: skip
SESSION_PARAMS = {
    "mode", "line_items", "success_url", "cancel_url", "client_reference_id", "customer",
    "customer_email", "customer_creation", "metadata", "payment_intent_data", "expires_at",
    "expand", "payment_method_types", "locale", "submit_type",
}  # fmt: skip


class Refused(Exception):
    """A request Stripe would refuse: its status and error fields."""

    def __init__(self, status: int, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.status, self.message, self.fields = status, message, fields


def _id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(12)}"


@dataclass
class Store:
    sessions: dict[str, dict[str, Any]] = field(default_factory=dict)
    intents: dict[str, dict[str, Any]] = field(default_factory=dict)
    charges: dict[str, dict[str, Any]] = field(default_factory=dict)
    refunds: dict[str, dict[str, Any]] = field(default_factory=dict)
    disputes: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # id -> (type, body)

    def get(self, kind: str, key: str) -> dict[str, Any]:
        found: dict[str, Any] | None = getattr(self, kind).get(key)
        if found is None:
            raise Refused(404, f"No such {kind[:-1]}: '{key}'", code="resource_missing")
        return found


def _int(name: str, value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        raise Refused(400, f"Invalid integer: {value}", param=name) from None


def create_session(form: dict[str, Any], port: int) -> dict[str, Any]:
    """A Checkout Session from the SDK's form, validated as Stripe does (the subset used)."""
    unknown = sorted(set(form) - SESSION_PARAMS)
    if unknown:
        raise Refused(400, f"Received unknown parameter: {unknown[0]}", param=unknown[0])
    if form.get("mode") != "payment":
        raise Refused(400, "This test server takes mode=payment only", param="mode")
    items = form.get("line_items")
    if not isinstance(items, list) or not items:
        raise Refused(400, "line_items is required in payment mode", param="line_items")
    currency, total = None, 0
    for n, item in enumerate(items):
        data = item.get("price_data") if isinstance(item, dict) else None
        if not isinstance(data, dict) or not isinstance(data.get("product_data"), dict):
            raise Refused(400, "price_data with product_data is required", param="line_items")
        if not data["product_data"].get("name"):
            raise Refused(400, "Missing required param: product_data[name]", param="line_items")
        currency = currency or data.get("currency")
        if data.get("currency") != currency:
            raise Refused(400, "All line items must share one currency", param="line_items")
        unit = _int(f"line_items[{n}][price_data][unit_amount]", data.get("unit_amount"))
        total += unit * _int(f"line_items[{n}][quantity]", item.get("quantity"))
    if currency is None or currency != str(currency).lower() or len(str(currency)) != 3:
        raise Refused(400, f"Invalid currency: {currency}", param="currency")
    if total < MIN_AMOUNT.get(currency, 1) or total > MAX_AMOUNT:
        raise Refused(
            400,
            "The Checkout Session's total amount due must add up to at least $0.50 usd "
            "and at most eight digits",
            code="amount_too_large" if total > MAX_AMOUNT else "amount_too_small",
        )
    if not form.get("success_url"):
        raise Refused(400, "Missing required param: success_url.", param="success_url")
    if form.get("customer") and form.get("customer_email"):
        raise Refused(400, "You may only specify one of: customer, customer_email.")
    now = int(time.time())
    expires_at = now + 86_400
    if "expires_at" in form:
        expires_at = _int("expires_at", form["expires_at"])
        if not now + 1800 - 5 <= expires_at <= now + 86_400 + 5:
            raise Refused(
                400,
                "The `expires_at` timestamp must be between 30 minutes and 24 hours from "
                "Checkout Session creation.",
                param="expires_at",
            )
    _check_metadata(form.get("metadata"), "metadata")
    intent_data = form.get("payment_intent_data") or {}
    _check_metadata(intent_data.get("metadata"), "payment_intent_data[metadata]")
    reference = form.get("client_reference_id")
    if reference is not None and len(reference) > 200:
        raise Refused(400, "client_reference_id is longer than 200", param="client_reference_id")
    session_id = _id("cs_test")
    return {
        "id": session_id,
        "object": "checkout.session",
        "amount_subtotal": total,
        "amount_total": total,
        "cancel_url": form.get("cancel_url"),
        "client_reference_id": reference,
        "created": now,
        "currency": currency,
        "customer": form.get("customer"),
        "customer_email": form.get("customer_email"),
        "expires_at": expires_at,
        "livemode": False,
        "metadata": form.get("metadata") or {},
        "mode": "payment",
        "payment_intent": None,
        "payment_status": "unpaid",
        "status": "open",
        "success_url": form["success_url"],
        "url": f"http://127.0.0.1:{port}/pay/{session_id}",
        "_intent_metadata": intent_data.get("metadata") or {},
        "_setup_future_usage": intent_data.get("setup_future_usage"),
    }


def _check_metadata(metadata: Any, param: str) -> None:
    if metadata is None:
        return
    if not isinstance(metadata, dict) or len(metadata) > 50:
        raise Refused(400, "Invalid metadata: at most 50 keys", param=param)
    for key, value in metadata.items():
        if len(key) > 40 or len(str(value)) > 500:
            raise Refused(400, "Metadata keys are at most 40 characters, values 500", param=param)


def public(obj: dict[str, Any]) -> dict[str, Any]:
    """The object as Stripe shows it (fields of this server's own start with ``_``)."""
    return {k: v for k, v in obj.items() if not k.startswith("_")}


class CheckoutApp:
    """The server's routes over one ``Store``."""

    def __init__(self) -> None:
        self.store = Store()
        self.log = RequestLog()
        self.webhooks = Webhooks()
        self.faults: list[int] = []  # statuses the next /v1 calls answer instead
        self.port = 0
        self.app = web.Application(middlewares=[self.log.middleware, self._errors, self._auth])
        r = self.app.router
        r.add_post("/v1/checkout/sessions", self.create)
        r.add_get("/v1/checkout/sessions/{id}", self.retrieve)
        r.add_post("/v1/checkout/sessions/{id}/expire", self.expire)
        r.add_post("/v1/payment_intents", self.create_intent)
        r.add_get("/v1/payment_intents/{id}", self.intent)
        r.add_get("/v1/events/{id}", self.event)
        r.add_post("/_config/webhooks/{id}", self.register)
        r.add_post("/_test/checkout/sessions/{id}/{action}", self.session_action)
        r.add_post("/_test/payment_intents/{id}/{action}", self.intent_action)
        r.add_post("/_test/refunds/{id}/fail", self.refund_failed)
        r.add_post("/_test/disputes/{id}/close", self.dispute_closed)
        r.add_post("/_test/events", self.any_event)
        r.add_post("/_test/events/{id}/deliver", self.redeliver)
        r.add_get("/_test/requests", self.requests)
        r.add_get("/_test/events", self.sent)
        r.add_post("/_test/reset", self.reset)
        r.add_post("/_test/faults", self.add_faults)

    @web.middleware
    async def _errors(self, request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            response: web.StreamResponse = await handler(request)
            return response
        except Refused as exc:
            return stripe_error(exc.status, exc.message, **exc.fields)

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.startswith("/v1/"):
            scheme, _, key = request.headers.get("Authorization", "").partition(" ")
            if scheme != "Bearer" or not key.startswith(("sk_", "rk_")) or len(key) < 8:
                # Stripe quotes the key it refused, masked but for its ends.
                shown = f"{key[:8]}{'*' * (len(key) - 12)}{key[-4:]}" if len(key) > 16 else "***"
                raise Refused(401, f"Invalid API Key provided: {shown}")
            if self.faults:
                status = self.faults.pop(0)
                kind = "rate_limit_error" if status == 429 else "api_error"
                fault = stripe_error(status, f"A fault of the test server ({status})", type=kind)
                fault.headers["Stripe-Should-Retry"] = "true"  # and is not kept for the key
                return fault
        response: web.StreamResponse = await handler(request)
        return response

    # -- the API the SDK calls ---------------------------------------------------------

    async def create(self, request: web.Request) -> web.Response:
        form = unflatten((k, str(v)) for k, v in (await request.post()).items())
        session = create_session(form, self.port)
        self.store.sessions[session["id"]] = session
        return web.json_response(public(session))

    async def retrieve(self, request: web.Request) -> web.Response:
        return web.json_response(public(self.store.get("sessions", request.match_info["id"])))

    async def expire(self, request: web.Request) -> web.Response:
        session = self._expire(request.match_info["id"])
        await self._emit("checkout.session.expired", session)
        return web.json_response(public(session))

    async def intent(self, request: web.Request) -> web.Response:
        return web.json_response(public(self.store.get("intents", request.match_info["id"])))

    async def event(self, request: web.Request) -> web.Response:
        if request.match_info["id"] not in self.store.events:
            raise Refused(404, "No such event", code="resource_missing")
        return web.Response(
            body=self.store.events[request.match_info["id"]][1], content_type="application/json"
        )

    # -- webhooks and events ------------------------------------------------------------

    async def register(self, request: web.Request) -> web.Response:
        if request.content_type == "application/json":
            data = await request.json()
        else:
            data = unflatten((k, str(v)) for k, v in (await request.post()).items())
        url, secret, events = data.get("url"), data.get("secret"), data.get("events")
        if not isinstance(url, str) or not url.startswith("http") or not secret:
            raise Refused(400, "url and secret are required")
        self.webhooks.endpoints[request.match_info["id"]] = Endpoint(url, str(secret), events)
        return web.Response()

    async def _emit(
        self,
        kind: str,
        obj: dict[str, Any],
        *,
        times: int = 1,
        previous: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        event_id = _id("evt_test")
        data: dict[str, Any] = {"object": public(obj)}
        if previous is not None:
            data["previous_attributes"] = previous
        event = {
            "id": event_id,
            "object": "event",
            "api_version": API_VERSION,
            "created": int(time.time()),
            "data": data,
            "livemode": False,
            "pending_webhooks": len(self.webhooks.endpoints),
            "request": {"id": None, "idempotency_key": None},
            "type": kind,
        }
        body = event_body(event)
        self.store.events[event_id] = (kind, body)
        statuses = await self.webhooks.deliver(event_id, kind, body, times=times)
        return {"id": event_id, "type": kind, "deliveries": statuses}

    async def any_event(self, request: web.Request) -> web.Response:
        options = await _options(request)
        kind, obj = options.get("type"), options.get("object")
        if not isinstance(kind, str) or not isinstance(obj, dict):
            raise Refused(400, "type (a string) and object (a mapping) are required")
        sent = await self._emit(kind, obj, times=_times(options))
        return web.json_response({"object": obj, "events": [sent]})

    async def redeliver(self, request: web.Request) -> web.Response:
        options = await _options(request)
        event_id = request.match_info["id"]
        if event_id not in self.store.events:
            raise Refused(404, f"No such event: '{event_id}'", code="resource_missing")
        kind, body = self.store.events[event_id]
        timestamp = options.get("timestamp")
        statuses = await self.webhooks.deliver(
            event_id,
            kind,
            body,
            times=_times(options),
            timestamp=int(timestamp) if timestamp is not None else None,
        )
        return web.json_response({"id": event_id, "type": kind, "deliveries": statuses})

    async def requests(self, request: web.Request) -> web.Response:
        return web.json_response(self.log.as_json())

    async def sent(self, request: web.Request) -> web.Response:
        events = [
            {"id": key, "type": kind, "deliveries": self.webhooks.deliveries.get(key, [])}
            for key, (kind, _) in self.store.events.items()
        ]
        return web.json_response(events)

    async def reset(self, request: web.Request) -> web.Response:
        self.store = Store()
        self.log.clear()
        self.webhooks.clear()
        self.faults.clear()
        return web.Response()

    async def add_faults(self, request: web.Request) -> web.Response:
        statuses = (await _options(request)).get("statuses")
        if not isinstance(statuses, list) or not all(isinstance(s, int) for s in statuses):
            raise Refused(400, "statuses must be a list of HTTP statuses")
        self.faults.extend(statuses)
        return web.Response()

    # -- what happens after the API call: payments, refunds, disputes --------------------

    def _expire(self, session_id: str) -> dict[str, Any]:
        session = self.store.get("sessions", session_id)
        if session["status"] != "open":
            raise Refused(400, f"Only open sessions can be expired: it is {session['status']}")
        session.update(status="expired", url=None)
        return session

    async def session_action(self, request: web.Request) -> web.Response:
        options = await _options(request)
        action, times = request.match_info["action"], _times(options)
        session = self.store.get("sessions", request.match_info["id"])
        sent: list[dict[str, Any]] = []
        if action == "expire":
            self._expire(session["id"])
            sent.append(await self._emit("checkout.session.expired", session, times=times))
        elif action == "complete":
            paid = options.get("payment_status", "paid") == "paid"
            if session["status"] != "open":
                raise Refused(400, f"The session is {session['status']}, not open")
            intent = self._pay(session, succeeded=paid)
            session.update(status="complete", url=None, payment_intent=intent["id"])
            session["payment_status"] = "paid" if paid else "unpaid"
            sent.append(await self._emit("checkout.session.completed", session, times=times))
            if paid:
                sent += await self._succeeded(intent, times)
        elif action in ("succeed", "fail"):
            if session["status"] == "open":
                intent = self._pay(session, succeeded=False)
                session.update(status="complete", url=None, payment_intent=intent["id"])
            if session["payment_status"] != "unpaid":
                raise Refused(400, "Only a session awaiting a delayed payment can change")
            intent = self.store.get("intents", session["payment_intent"])
            if action == "succeed":
                session["payment_status"] = "paid"
                self._settle(intent)
                kind = "checkout.session.async_payment_succeeded"
                sent.append(await self._emit(kind, session, times=times))
                sent += await self._succeeded(intent, times)
            else:
                intent.update(
                    status="requires_payment_method",
                    last_payment_error={
                        "code": "payment_method_provider_decline",
                        "message": "The bank declined the debit.",
                        "type": "card_error",
                    },
                )
                kind = "checkout.session.async_payment_failed"
                sent.append(await self._emit(kind, session, times=times))
                sent.append(await self._emit("payment_intent.payment_failed", intent, times=times))
        else:
            raise Refused(404, f"Unknown action {action}")
        return web.json_response({"object": public(session), "events": sent})

    def _pay(self, session: dict[str, Any], *, succeeded: bool) -> dict[str, Any]:
        intent = self._intent(
            session["amount_total"],
            session["currency"],
            session["customer"],
            dict(session["_intent_metadata"]),
            session["_setup_future_usage"],
        )
        if succeeded:
            self._settle(intent)
        return intent

    def _intent(
        self,
        amount: int,
        currency: str,
        customer: str | None,
        metadata: dict[str, Any],
        setup_future_usage: str | None = None,
    ) -> dict[str, Any]:
        intent_id = _id("pi_test")
        intent = {
            "id": intent_id,
            "object": "payment_intent",
            "amount": amount,
            "amount_received": 0,
            "created": int(time.time()),
            "currency": currency,
            "customer": customer,
            "last_payment_error": None,
            "latest_charge": None,
            "livemode": False,
            "metadata": metadata,
            "setup_future_usage": setup_future_usage,
            "status": "processing",
        }
        self.store.intents[intent_id] = intent
        return intent

    async def create_intent(self, request: web.Request) -> web.Response:
        """An off-session charge of a test card, answered as Stripe answers it: a decline
        is a 402 ``card_error`` whose body holds the failed PaymentIntent."""
        form = unflatten((k, str(v)) for k, v in (await request.post()).items())
        unknown = sorted(set(form) - INTENT_PARAMS)
        if unknown:
            raise Refused(400, f"Received unknown parameter: {unknown[0]}", param=unknown[0])
        if (form.get("confirm"), form.get("off_session")) != ("true", "true"):
            raise Refused(400, "This test server takes confirm=true with off_session=true only")
        amount, currency = _int("amount", form.get("amount")), str(form.get("currency"))
        if not MIN_AMOUNT.get(currency, 1) <= amount <= MAX_AMOUNT:
            raise Refused(400, "Amount must be at least $0.50 usd", param="amount")
        card = form.get("payment_method")
        if card not in CARDS:
            raise Refused(
                400,
                f"No such PaymentMethod: '{card}'",
                code="resource_missing",
                param="payment_method",
            )
        _check_metadata(form.get("metadata"), "metadata")
        intent = self._intent(amount, currency, form.get("customer"), form.get("metadata") or {})
        decline = CARDS[card]
        if decline == "processing":
            return web.json_response(public(intent))
        if not isinstance(decline, tuple):
            self._settle(intent)
            await self._succeeded(intent, 1)
            return web.json_response(public(intent))
        code, reason, message = decline
        error = {"code": code, "decline_code": reason, "type": "card_error"}
        intent.update(
            status="requires_payment_method",
            last_payment_error={**error, "message": message, "payment_method": {"id": card}},
        )
        await self._emit("payment_intent.payment_failed", intent)
        return stripe_error(402, message, **error, payment_intent=public(intent))

    def _settle(self, intent: dict[str, Any]) -> None:
        charge_id = _id("ch_test")
        self.store.charges[charge_id] = {
            "id": charge_id,
            "object": "charge",
            "amount": intent["amount"],
            "amount_captured": intent["amount"],
            "amount_refunded": 0,
            "created": int(time.time()),
            "currency": intent["currency"],
            "customer": intent["customer"],
            "disputed": False,
            "livemode": False,
            "metadata": {},
            "paid": True,
            "payment_intent": intent["id"],
            "refunded": False,
            "status": "succeeded",
        }
        intent.update(status="succeeded", amount_received=intent["amount"], latest_charge=charge_id)

    async def _succeeded(self, intent: dict[str, Any], times: int) -> list[dict[str, Any]]:
        charge = self.store.get("charges", intent["latest_charge"])
        return [
            await self._emit("payment_intent.succeeded", intent, times=times),
            await self._emit("charge.succeeded", charge, times=times),
        ]

    def _charge_of(self, intent_id: str) -> dict[str, Any]:
        intent = self.store.get("intents", intent_id)
        if intent["latest_charge"] is None:
            raise Refused(400, f"PaymentIntent {intent_id} has no successful charge")
        return self.store.get("charges", intent["latest_charge"])

    async def intent_action(self, request: web.Request) -> web.Response:
        options = await _options(request)
        charge = self._charge_of(request.match_info["id"])
        handlers: dict[str, Callable[..., Any]] = {"refund": self._refund, "dispute": self._dispute}
        handler = handlers.get(request.match_info["action"])
        if handler is None:
            raise Refused(404, f"Unknown action {request.match_info['action']}")
        obj, sent = await handler(charge, options)
        return web.json_response({"object": public(obj), "events": sent})

    async def _refund(
        self, charge: dict[str, Any], options: dict[str, Any]
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        left = charge["amount"] - charge["amount_refunded"]
        amount = int(options.get("amount", left))
        if not 0 < amount <= left:
            raise Refused(400, f"Refund amount ({amount}) is greater than unrefunded ({left})")
        refund_id = _id("re_test")
        refund = {
            "id": refund_id,
            "object": "refund",
            "amount": amount,
            "charge": charge["id"],
            "created": int(time.time()),
            "currency": charge["currency"],
            "metadata": {},
            "payment_intent": charge["payment_intent"],
            "reason": options.get("reason"),
            "status": "succeeded",
        }
        self.store.refunds[refund_id] = refund
        previous = {"amount_refunded": charge["amount_refunded"], "refunded": charge["refunded"]}
        charge["amount_refunded"] += amount
        charge["refunded"] = charge["amount_refunded"] == charge["amount"]
        times = _times(options)
        sent = [
            await self._emit("refund.created", refund, times=times),
            await self._emit("charge.refunded", charge, times=times, previous=previous),
        ]
        return refund, sent

    async def refund_failed(self, request: web.Request) -> web.Response:
        times = _times(await _options(request))
        refund = self.store.get("refunds", request.match_info["id"])
        if refund["status"] == "failed":
            raise Refused(400, "The refund has failed already")
        previous = {"status": refund["status"]}
        refund.update(status="failed", failure_reason="expired_or_canceled_card")
        self.store.get("charges", refund["charge"])["amount_refunded"] -= refund["amount"]
        sent = [
            await self._emit("refund.updated", refund, times=times, previous=previous),
            await self._emit("refund.failed", refund, times=times),
        ]
        return web.json_response({"object": public(refund), "events": sent})

    async def _dispute(
        self, charge: dict[str, Any], options: dict[str, Any]
    ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        status = str(options.get("status", "needs_response"))
        dispute_id = _id("dp_test")
        dispute = {
            "id": dispute_id,
            "object": "dispute",
            "amount": int(options.get("amount", charge["amount"])),
            "charge": charge["id"],
            "created": int(time.time()),
            "currency": charge["currency"],
            "is_charge_refundable": False,
            "livemode": False,
            "metadata": {},
            "payment_intent": charge["payment_intent"],
            "reason": "fraudulent",
            "status": status,
        }
        self.store.disputes[dispute_id] = dispute
        charge["disputed"] = True
        times = _times(options)
        sent = [await self._emit("charge.dispute.created", dispute, times=times)]
        if not status.startswith("warning_"):
            sent.append(await self._emit("charge.dispute.funds_withdrawn", dispute, times=times))
        return dispute, sent

    async def dispute_closed(self, request: web.Request) -> web.Response:
        options = await _options(request)
        dispute = self.store.get("disputes", request.match_info["id"])
        dispute["status"] = str(options.get("status", "won"))
        sent = [await self._emit("charge.dispute.closed", dispute, times=_times(options))]
        return web.json_response({"object": public(dispute), "events": sent})


async def _options(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    data = await request.json()
    if not isinstance(data, dict):
        raise Refused(400, "The body must be a JSON object")
    return data


def _times(options: dict[str, Any]) -> int:
    times = int(options.get("times", 1))
    if not 1 <= times <= 100:
        raise Refused(400, "times must be 1 to 100")
    return times


class CheckoutServer:
    """``CheckoutApp`` on a loopback port, served by a thread with its own event loop.

    The helpers are plain blocking HTTP calls to the control routes; whatever receives
    the webhooks must not be served by the caller's own event loop while it waits."""

    def __init__(self, port: int = 0) -> None:
        self.checkout = CheckoutApp()
        self.port = port
        self._loop = asyncio.new_event_loop()
        self._runner = web.AppRunner(self.checkout.app, access_log=None)
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> CheckoutServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(timeout=10)
        return self

    async def _serve(self) -> None:
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = self.checkout.port = int(sock.getsockname()[1])
        await web.SockSite(self._runner, sock).start()

    def stop(self) -> None:
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> CheckoutServer:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- control helpers ------------------------------------------------------------------

    def call(self, path: str, **options: Any) -> Any:
        """POST a control route (``/_test/…``, ``/_config/…``) with ``options`` as JSON."""
        response = httpx.post(f"{self.url}{path}", json=options, timeout=60)
        response.raise_for_status()
        return response.json() if response.content else None

    def reset(self) -> None:
        self.call("/_test/reset")

    def register_webhook(
        self, url: str, secret: str, *, events: list[str] | None = None, name: str = "tests"
    ) -> None:
        self.call(f"/_config/webhooks/{name}", url=url, secret=secret, events=events)

    def complete(self, session_id: str, **options: Any) -> Any:
        return self.call(f"/_test/checkout/sessions/{session_id}/complete", **options)

    def session_action(self, session_id: str, action: str, **options: Any) -> Any:
        return self.call(f"/_test/checkout/sessions/{session_id}/{action}", **options)

    def refund(self, payment_intent_id: str, **options: Any) -> Any:
        return self.call(f"/_test/payment_intents/{payment_intent_id}/refund", **options)

    def dispute(self, payment_intent_id: str, **options: Any) -> Any:
        return self.call(f"/_test/payment_intents/{payment_intent_id}/dispute", **options)

    def send_event(self, kind: str, obj: dict[str, Any], **options: Any) -> Any:
        return self.call("/_test/events", type=kind, object=obj, **options)

    def deliver(self, event_id: str, **options: Any) -> Any:
        return self.call(f"/_test/events/{event_id}/deliver", **options)

    def requests(self) -> list[dict[str, Any]]:
        return list(httpx.get(f"{self.url}/_test/requests", timeout=10).json())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=12111)
    args = parser.parse_args(argv)
    checkout = CheckoutApp()
    checkout.port = args.port
    web.run_app(checkout.app, host="127.0.0.1", port=args.port, access_log=None)


if __name__ == "__main__":
    main()
