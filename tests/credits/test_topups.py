"""Stripe top-ups end to end, against the real gateway under uvicorn and the in-repo
Checkout server: a customer out of credit is refused (402), starts a Checkout, pays,
and Stripe's signed ``checkout.session.completed`` — delivered five times at once —
credits the account once; a refund takes the money back as a negative movement; an
unknown event is acknowledged; a bad signature is refused."""

from __future__ import annotations

from decimal import Decimal

import httpx
import pytest
from tests.credits.stripe_support import SECRET_KEY, SUCCESS_URL, WEBHOOK_SECRET
from tests.support import LiveServer, wait_for

HI = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}


@pytest.fixture
def live(make_settings, stripe_checkout):
    settings = make_settings(
        allow_anonymous=False,
        stripe_secret_key=SECRET_KEY,
        stripe_webhook_secret=WEBHOOK_SECRET,
        stripe_api_base=stripe_checkout.url,
        stripe_success_url=SUCCESS_URL,
        stripe_max_network_retries=0,
    )
    with LiveServer(settings) as server:
        stripe_checkout.register_webhook(f"{server.url}/api/webhooks/stripe", WEBHOOK_SECRET)
        yield server


def api(live: LiveServer, method: str, path: str, status: int, **request: object) -> dict:
    response = httpx.request(method, f"{live.url}{path}", timeout=30, **request)  # type: ignore[arg-type]
    assert response.status_code == status, (path, response.text)
    return dict(response.json())


def available(live: LiveServer, account_id: str) -> Decimal:
    account = api(live, "GET", f"/api/credits/accounts/{account_id}", 200)["account"]
    return Decimal(str(account["balance"]["available"]))


def test_a_checkout_paid_once_credits_once_however_often_stripe_says_so(live, stripe_checkout):
    customer = api(live, "POST", "/api/governance/customers", 201, json={"name": "acme"})
    customer_id = customer["customer"]["id"]
    key = api(
        live,
        "POST",
        "/api/governance/virtual-keys",
        201,
        json={"name": "k", "customer_id": customer_id},
    )["virtual_key"]["value"]
    account = api(
        live,
        "POST",
        "/api/credits/accounts",
        201,
        json={"owner_type": "customer", "owner_id": customer_id},
    )["account"]
    chat = {"json": HI, "headers": {"authorization": f"Bearer {key}"}}
    assert api(live, "POST", "/v1/chat/completions", 402, **chat)["error"]["code"] == (
        "insufficient_credits"
    )

    started = api(
        live, "POST", f"/api/credits/accounts/{account['id']}/checkout", 201, json={"amount": 10}
    )
    assert started["checkout_url"] and started["session_id"].startswith("cs_")
    # Five copies of the signed event at once, delivered before this call returns.
    stripe_checkout.complete(started["session_id"], times=5)

    assert available(live, account["id"]) == 10
    api(live, "POST", "/v1/chat/completions", 200, **chat)
    journal = api(live, "GET", f"/api/credits/accounts/{account['id']}/ledger", 200)["entries"]
    purchases = [e for e in journal if e["kind"] == "purchase"]
    assert len(purchases) == 1 and Decimal(str(purchases[0]["amount"])) == 10
    topups = api(live, "GET", f"/api/credits/accounts/{account['id']}/topups", 200)["topups"]
    assert [t["status"] for t in topups] == ["succeeded"]

    stripe_checkout.refund(purchases[0]["payment_intent"], amount=400)
    wait_for(
        lambda: any(
            e["kind"] == "refund"
            for e in api(live, "GET", f"/api/credits/accounts/{account['id']}/ledger", 200)[
                "entries"
            ]
        ),
        what="the refund booked",
    )
    journal = api(live, "GET", f"/api/credits/accounts/{account['id']}/ledger", 200)["entries"]
    refund = next(e for e in journal if e["kind"] == "refund")
    assert Decimal(str(refund["amount"])) == Decimal("-4")

    bad = httpx.post(
        f"{live.url}/api/webhooks/stripe",
        content=b"{}",
        headers={"stripe-signature": "t=1,v1=00"},
        timeout=10,
    )
    assert bad.status_code == 401
