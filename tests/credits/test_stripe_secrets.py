"""The Stripe secret key and webhook secret are never shown: not by ``repr`` of the
settings or of ``Payments``, not in a log line at any level, not in an error."""

from __future__ import annotations

import logging
import os
from decimal import Decimal

import pytest
from devtools.stripe_checkout import CheckoutServer
from pydantic import SecretStr
from tests.credits.helpers import call, open_account
from tests.credits.stripe_support import (
    SECRET_KEY,
    WEBHOOK_SECRET,
    Receiver,
    stripe_settings,
)
from tests.governance.helpers import create_customer

from tollhouse.config import load_settings
from tollhouse.credits.stripe import Payments, fact_of, verify
from tollhouse.errors import ConfigError, ServiceUnavailable, SignatureInvalid, TollhouseError

SECRETS = (SECRET_KEY, WEBHOOK_SECRET)


def test_settings_and_payments_do_not_show_the_secrets(stripe_checkout: CheckoutServer):
    settings = stripe_settings(stripe_checkout.url)
    payments = Payments(settings)
    shown = [repr(settings), str(settings), repr(payments), str(payments)]
    shown += [repr(settings.stripe_secret_key), repr(settings.stripe_webhook_secret)]
    for text in shown:
        for secret in SECRETS:
            assert secret not in text
    assert repr(payments) == f"Payments(api_base={stripe_checkout.url!r})"


async def test_a_whole_top_up_logs_no_secret(
    stripe_checkout: CheckoutServer, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.DEBUG)  # every logger, the stripe library's included
    errors: list[TollhouseError] = []
    with Receiver() as receiver:
        stripe_checkout.register_webhook(receiver.url, WEBHOOK_SECRET)
        async with Payments(stripe_settings(stripe_checkout.url)) as payments:
            session = await payments.create_checkout("top_1", Decimal("5"), account_id="acct_1")
            stripe_checkout.complete(session.session_id)
            for delivery in receiver.deliveries:
                fact_of(verify(delivery.body, delivery.signature, SecretStr(WEBHOOK_SECRET)))
            try:
                verify(
                    receiver.deliveries[0].body + b" ",
                    receiver.deliveries[0].signature,
                    SecretStr(WEBHOOK_SECRET),
                )
            except SignatureInvalid as exc:
                errors.append(exc)
        async with Payments(
            stripe_settings(stripe_checkout.url, stripe_secret_key="sk_bad")
        ) as bad:
            try:
                await bad.create_checkout("top_2", Decimal("5"), account_id="acct_1")
            except TollhouseError as exc:
                errors.append(exc)
    assert any("Request to Stripe api" in r.getMessage() for r in caplog.records)
    assert len(errors) == 2
    text = caplog.text + "".join(e.message for e in errors)
    for secret in (*SECRETS, "sk_bad"):
        assert secret not in text


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("STRIPE_SECRET_KEY", "pk_test_publishable_0123456789"),
        ("STRIPE_SECRET_KEY", ""),
        ("STRIPE_SECRET_KEY", "sk_test_with_a_space at_the_end "),
        ("STRIPE_WEBHOOK_SECRET", "sk_test_the_wrong_one_0123456789"),
    ],
)
def test_a_key_of_the_wrong_kind_stops_start_up_without_being_echoed(name: str, value: str):
    env = {"TOLLHOUSE_CONFIG": os.devnull, f"TOLLHOUSE_{name}": value}
    with pytest.raises(ConfigError, match=name.lower()) as refused:
        load_settings(env=env)
    if value.strip():
        assert value.strip() not in refused.value.message


def test_payments_needs_a_key_and_a_page_to_return_to(stripe_checkout: CheckoutServer):
    with pytest.raises(ConfigError, match="TOLLHOUSE_STRIPE_SECRET_KEY"):
        Payments(stripe_settings(stripe_checkout.url, stripe_secret_key=None))
    with pytest.raises(ConfigError, match="TOLLHOUSE_STRIPE_SUCCESS_URL"):
        Payments(stripe_settings(stripe_checkout.url, stripe_success_url=None))


async def test_off_session_charges_need_no_page_to_return_to(stripe_checkout: CheckoutServer):
    settings = stripe_settings(stripe_checkout.url, stripe_success_url=None)
    async with Payments(settings, checkout=False) as payments:
        with pytest.raises(ServiceUnavailable, match="TOLLHOUSE_STRIPE_SUCCESS_URL"):
            await payments.create_checkout("top_1", Decimal("5"), account_id="acct_1")
    assert stripe_checkout.requests() == []


async def test_without_stripe_configured_top_ups_and_webhooks_are_unavailable(gateway):
    """No secret key: no Checkout (and no top-up row opened); no webhook secret: no event
    is read, since none could be verified."""
    customer = await create_customer(gateway)
    account = await open_account(gateway, "customer", customer["id"])
    path = f"/accounts/{account['id']}/checkout"
    refused = await call(gateway, "POST", path, {"amount": Decimal(10)}, 503)
    assert "Stripe is not configured: set TOLLHOUSE_STRIPE_SECRET_KEY" in refused["error"]
    assert (await call(gateway, "GET", f"/accounts/{account['id']}/topups"))["count"] == 0
    event = {"id": "evt_1", "type": "payment_intent.succeeded", "data": {"object": {}}}
    response = await gateway.post(
        "/api/webhooks/stripe", json=event, headers={"stripe-signature": "t=1,v1=00"}
    )
    assert response.status_code == 503
    assert "set TOLLHOUSE_STRIPE_WEBHOOK_SECRET" in response.json()["error"]
