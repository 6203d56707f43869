"""Grants: ``Idempotency-Key`` answers the first grant again; a grant effective later is
booked when it takes effect; usage draws lots by priority, then soonest expiry; what
is left of an expired lot is booked to breakage, never what was already spent; a
negative adjustment takes credit away. And the journal as a statement: cursor pages,
``as_of``, CSV."""

from __future__ import annotations

import asyncio
import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from tests.credits.books import open_customer_account, waiting_on_a_lock
from tests.credits.helpers import balance, call, entries, grant, open_account
from tests.governance.helpers import chat, create_customer, create_key, records
from tests.support import wait_until

from tollhouse.credits import service
from tollhouse.credits.schemas import GrantCreate
from tollhouse.credits.statement import COLUMNS
from tollhouse.credits.verify import verify
from tollhouse.web.validation import parse

pytestmark = pytest.mark.usefixtures("upstream")


@pytest.fixture
def settings(make_settings):
    return make_settings(allow_anonymous=False, credits_sweep_interval_s=3600)


async def account_with_key(gateway):
    customer = await create_customer(gateway)
    key, value = await create_key(gateway, customer_id=customer["id"])
    account = await open_account(gateway, "customer", customer["id"])
    return account["id"], key, value


async def test_the_same_idempotency_key_grants_once(gateway):
    account_id, _, _ = await account_with_key(gateway)
    first = await grant(gateway, account_id, "5", key="welcome-1", category="referral")
    again = await grant(gateway, account_id, "5", key="welcome-1", category="referral", status=200)
    assert again["id"] == first["id"]
    assert (await balance(gateway, account_id))["total"] == 5
    changed = await call(
        gateway,
        "POST",
        f"/accounts/{account_id}/grants",
        {"amount": 6, "category": "referral"},
        409,
        headers={"Idempotency-Key": "welcome-1"},
    )
    assert "different grant" in changed["error"]
    other = await grant(gateway, account_id, "5", key="welcome-2", category="referral")
    assert other["id"] != first["id"]
    assert (await balance(gateway, account_id))["total"] == 10


async def test_a_future_grant_is_booked_when_it_takes_effect(gateway, app):
    account_id, _, value = await account_with_key(gateway)
    start = datetime.now(UTC) + timedelta(hours=1)
    lot = await grant(gateway, account_id, "1", effective_at=start.isoformat())
    assert lot["status"] == "scheduled"
    assert (await balance(gateway, account_id))["total"] == 0
    assert (await chat(gateway, value)).status_code == 402
    assert await app.services.credit_sweeper.sweep(start - timedelta(seconds=1)) == (0, 0)
    assert await app.services.credit_sweeper.sweep(start) == (1, 0)
    assert (await balance(gateway, account_id))["total"] == 1
    assert (await chat(gateway, value)).status_code == 200


async def test_usage_draws_by_priority_then_soonest_expiry_and_expiry_books_the_rest(gateway, app):
    account_id, key, value = await account_with_key(gateway)
    now = datetime.now(UTC)
    later = (now + timedelta(days=30)).isoformat()
    sooner = (now + timedelta(days=1)).isoformat()
    keeps = await grant(gateway, account_id, "0.001", priority=10)
    lapses_later = await grant(gateway, account_id, "0.001", priority=5, expires_at=later)
    lapses_sooner = await grant(gateway, account_id, "0.001", priority=5, expires_at=sooner)
    assert (await chat(gateway, value)).status_code == 200
    spent = (await records(gateway, app, key_id=key["id"]))[0]["cost"]
    assert 0 < spent < Decimal("0.001")

    # The sweeper draws the lots down before it expires the soonest one.
    expired_at = now + timedelta(days=1, seconds=1)
    assert await app.services.credit_sweeper.sweep(expired_at) == (0, 1)
    journal = await entries(gateway, account_id)
    assert journal[0]["kind"] == "expire"
    assert journal[0]["lot_id"] == lapses_sooner["id"]
    assert journal[0]["amount"] == -(Decimal("0.001") - spent)
    lots = (await call(gateway, "GET", f"/accounts/{account_id}/grants"))["grants"]
    assert [(g["id"], g["remaining"]) for g in lots] == [
        (lapses_later["id"], Decimal("0.001")),
        (keeps["id"], Decimal("0.001")),
    ]
    assert (await balance(gateway, account_id))["total"] == Decimal("0.002")


async def test_spending_past_every_lot_is_debt_the_next_grant_repays(gateway, app):
    customer = await create_customer(gateway)
    key, value = await create_key(gateway, customer_id=customer["id"])
    account = await open_account(gateway, "customer", customer["id"], overdraft_limit=1)
    assert (await chat(gateway, value)).status_code == 200
    cost = (await records(gateway, app, key_id=key["id"]))[0]["cost"]
    lot = await grant(gateway, account["id"], "0.5")
    assert lot["remaining"] == Decimal("0.5") - cost
    assert (await balance(gateway, account["id"]))["total"] == Decimal("0.5") - cost


async def test_a_negative_adjustment_takes_credit_away(gateway):
    account_id, _, value = await account_with_key(gateway)
    await grant(gateway, account_id, "0.00002")
    taken = await grant(gateway, account_id, "-0.00002", category="adjustment", memo="oops")
    assert taken["status"] == "booked" and taken["amount"] == Decimal("-0.00002")
    assert (await balance(gateway, account_id))["total"] == 0
    assert (await chat(gateway, value)).status_code == 402
    for body, message in [
        ({"amount": -1, "category": "promotional"}, "only an adjustment may be negative"),
        ({"amount": 0}, "must not be 0"),
        ({"amount": "1"}, "amount"),
        ({"amount": 1, "expires_at": "2000-01-01T00:00:00Z"}, "after effective_at"),
        ({"amount": 1, "category": "gift"}, "category"),
    ]:
        refused = await call(gateway, "POST", f"/accounts/{account_id}/grants", body, 400)
        assert message in refused["error"], (body, refused)
    await call(gateway, "POST", "/accounts/nope/grants", {"amount": 1}, 404)


async def test_the_statement_pages_by_cursor_and_exports_csv(gateway):
    account_id, _, _ = await account_with_key(gateway)
    for n in range(1, 6):
        await grant(gateway, account_id, str(n), memo="=HYPERLINK(1)" if n == 5 else None)
    first = await call(gateway, "GET", f"/accounts/{account_id}/ledger", params={"limit": 2})
    assert [e["amount"] for e in first["entries"]] == [5, 4]
    assert [e["balance_after"] for e in first["entries"]] == [15, 10]
    second = await call(
        gateway,
        "GET",
        f"/accounts/{account_id}/ledger",
        params={"limit": 2, "cursor": first["next_cursor"]},
    )
    assert [e["amount"] for e in second["entries"]] == [3, 2]
    assert [e["balance_after"] for e in second["entries"]] == [6, 3]
    last = await call(
        gateway,
        "GET",
        f"/accounts/{account_id}/ledger",
        params={"limit": 2, "cursor": second["next_cursor"]},
    )
    assert [e["amount"] for e in last["entries"]] == [1] and last["next_cursor"] is None
    past = await call(
        gateway, "GET", f"/accounts/{account_id}/ledger", params={"as_of": "2000-01-01T00:00:00Z"}
    )
    assert past["entries"] == []
    await call(gateway, "GET", f"/accounts/{account_id}/ledger", params={"cursor": "x"}, status=400)

    response = await gateway.get(
        f"/api/credits/accounts/{account_id}/ledger", headers={"accept": "text/csv"}
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [r["amount"] for r in rows] == ["1", "2", "3", "4", "5"]
    assert [r["balance_after"] for r in rows] == ["1", "3", "6", "10", "15"]
    assert rows[-1]["memo"] == "'=HYPERLINK(1)"
    before = await gateway.get(
        f"/api/credits/accounts/{account_id}/ledger",
        params={"as_of": "2000-01-01T00:00:00Z"},
        headers={"accept": "text/csv"},
    )
    assert list(csv.reader(io.StringIO(before.text))) == [list(COLUMNS)]
    gone = await gateway.get("/api/credits/accounts/nope/ledger", headers={"accept": "text/csv"})
    assert gone.status_code == 404


async def test_auto_topup_settings_merge_and_reenabling_clears_the_failures(gateway):
    account_id, _, _ = await account_with_key(gateway)
    path = f"/accounts/{account_id}"
    on = {"enabled": True, "threshold": 5, "amount": 20, "stripe_payment_method": "pm_1"}
    account = (await call(gateway, "PUT", path, {"auto_topup": on}))["account"]
    assert account["auto_topup"] == {
        "enabled": True,
        "threshold": 5,
        "amount": 20,
        "monthly_cap": None,
        "consecutive_failures": 0,
        "disabled_reason": None,
        "stripe_customer": None,
        "has_payment_method": True,
        "skipped_reason": None,
    }
    merged = (await call(gateway, "PUT", path, {"auto_topup": {"monthly_cap": 100}}))["account"]
    assert merged["auto_topup"]["monthly_cap"] == 100 and merged["auto_topup"]["amount"] == 20
    low = (await call(gateway, "PUT", path, {"low_balance": Decimal("0.5")}))["account"]
    assert low["low_balance"] == Decimal("0.5")
    unset = (await call(gateway, "PUT", path, {"low_balance": None}))["account"]
    assert unset["low_balance"] is None
    again = (await call(gateway, "PUT", path, {"auto_topup": {"enabled": True}}))["account"]
    assert again["auto_topup"]["enabled"] is True  # the stored threshold and amount count
    off = {"enabled": False, "threshold": None}
    await call(gateway, "PUT", path, {"auto_topup": off})
    refused = await call(gateway, "PUT", path, {"auto_topup": {"enabled": True}}, 400)
    assert "needs threshold and amount" in refused["error"]
    await call(gateway, "PUT", "/accounts/nope", {}, 404)


async def test_what_a_grant_or_an_account_may_not_say_is_a_400_naming_it(gateway):
    account_id, _, _ = await account_with_key(gateway)
    grants = f"/accounts/{account_id}/grants"
    for body, message in [
        ({"amount": Decimal("1000000000.5")}, "is too large: at most 1000000000 USD"),
        ({"amount": Decimal("-1000000000.5"), "category": "adjustment"}, "is too large"),
        (
            {"amount": -1, "category": "adjustment", "expires_at": "2100-01-01T00:00:00Z"},
            "a negative adjustment takes effect now and does not expire",
        ),
        (
            {"amount": -1, "category": "adjustment", "effective_at": "2100-01-01T00:00:00Z"},
            "a negative adjustment takes effect now and does not expire",
        ),
    ]:
        refused = await call(gateway, "POST", grants, body, 400)
        assert message in refused["error"], (body, refused)
    for key in ["   ", "k" * 256, "tab\there"]:
        refused = await call(
            gateway, "POST", grants, {"amount": 1}, 400, headers={"Idempotency-Key": key}
        )
        assert "Idempotency-Key must be 1 to 255 printable characters" in refused["error"]
    assert (await balance(gateway, account_id))["total"] == 0

    # Auto top-up amounts are what Stripe can charge: whole cents from 0.50 USD.
    for amount in ["0.505", "0.49", "1000000"]:
        body = {"auto_topup": {"amount": Decimal(amount)}}
        refused = await call(gateway, "PUT", f"/accounts/{account_id}", body, 400)
        assert "must be whole cents from 0.50 to 999999.99 USD" in refused["error"], amount
    other = await create_customer(gateway)
    body = {"owner_type": "customer", "owner_id": other["id"]}
    body["auto_topup"] = {"enabled": True, "threshold": 5}
    refused = await call(gateway, "POST", "/accounts", body, 400)
    assert "auto_topup: enabled needs threshold and amount" in refused["error"]
    assert (await call(gateway, "GET", "/accounts", params={"owner_id": other["id"]}))["count"] == 0


async def test_the_same_grant_sent_twice_at_once_is_granted_once(pg_engine):
    """The second waits for the first, its lot insert meets the key the first committed,
    and it answers the first grant."""
    engine = pg_engine
    async with engine.begin() as conn:
        account = await open_customer_account(conn, "acme")
    body = parse(GrantCreate, {"amount": Decimal("5"), "category": "referral"})

    async def second() -> tuple[Any, bool]:
        async with engine.begin() as conn:
            return await service.grant(conn, account, body, "welcome-1")

    async with engine.connect() as conn:
        await conn.begin()
        first, new = await service.grant(conn, account, body, "welcome-1")
        assert new
        answering = asyncio.create_task(second())
        await wait_until(lambda: waiting_on_a_lock(engine), what="the second waiting")
        await conn.commit()
    again, new = await answering
    assert (again.id, new) == (first.id, False)
    async with engine.connect() as conn:
        assert (await service.get_account(conn, account)).funded == Decimal("5")
        assert (await verify(conn)).ok
