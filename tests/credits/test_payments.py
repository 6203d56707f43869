"""Stripe facts booked in the journal (``credits/payments.py``), on SQLite and Postgres:
each event once, each payment once, money taken back only from the account its
PaymentIntent credited, and a failed top-up recorded without moving money."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from tollhouse.credits import attempts, payments, service
from tollhouse.credits.models import credit_lots, credit_topups, stripe_events
from tollhouse.credits.schemas import AccountCreate
from tollhouse.credits.stripe_events import (
    Dispute,
    DisputeWon,
    PaymentFailed,
    Purchase,
    Refund,
    RefundFailed,
)
from tollhouse.governance import service as governance
from tollhouse.governance.schemas import CustomerCreate
from tollhouse.web.validation import parse


async def new_account(engine) -> str:
    async with engine.begin() as conn:
        customer = await governance.create_customer(conn, parse(CustomerCreate, {"name": "c"}))
        body = parse(AccountCreate, {"owner_type": "customer", "owner_id": customer.customer.id})
        return str((await service.create_account(conn, body)).id)


async def book(engine, event_id: str, fact, kind: str = "x") -> bool | None:
    async with engine.begin() as conn:
        return await payments.book_event(conn, event_id, kind, fact)


async def funded(engine, account_id: str) -> Decimal:
    async with engine.connect() as conn:
        account = await service.get_account(conn, account_id)
        journal = await service.journal_totals(conn, account_id)
    assert (account.funded, account.spent) == journal
    return Decimal(account.funded)


def purchase(event: str, pi: str, account_id: str, amount: str = "10", topup=None) -> Purchase:
    return Purchase(event, pi, Decimal(amount), account_id, topup, "checkout")


async def test_a_payment_is_credited_once_whatever_announces_it(engine):
    account_id = await new_account(engine)
    assert await book(engine, "evt_1", purchase("evt_1", "pi_1", account_id)) is True
    assert await book(engine, "evt_1", purchase("evt_1", "pi_1", account_id)) is None
    # The same PaymentIntent announced by another event: stored, nothing booked.
    assert await book(engine, "evt_2", purchase("evt_2", "pi_1", account_id)) is False
    assert await funded(engine, account_id) == 10
    async with engine.connect() as conn:
        lots = (await conn.execute(credit_lots.select())).all()
        events = (await conn.execute(stripe_events.select())).all()
    assert [(lot.source, lot.remaining, lot.priority) for lot in lots] == [
        ("purchase", 10, payments.PURCHASE_PRIORITY)
    ]
    assert {e.event_id: e.transaction_seq is not None for e in events} == {
        "evt_1": True,
        "evt_2": False,
    }


async def test_a_payment_for_no_account_moves_nothing(engine):
    assert await book(engine, "evt_x", purchase("evt_x", "pi_x", "acct_nope")) is False
    assert await book(engine, "evt_x", purchase("evt_x", "pi_x", "acct_nope")) is None


async def test_refunds_and_disputes_take_back_and_their_reversals_give_back(engine):
    account_id = await new_account(engine)
    await book(engine, "evt_p", purchase("evt_p", "pi_p", account_id, "20"))
    refund = Refund("evt_r", "pi_p", "ch_1", "re_1", Decimal("5"))
    assert await book(engine, "evt_r", refund) is True
    assert (
        await book(engine, "evt_r2", Refund("evt_r2", "pi_p", "ch_1", "re_1", Decimal("5")))
        is False
    )
    assert await funded(engine, account_id) == 15
    failed = RefundFailed("evt_rf", "pi_p", "ch_1", "re_1", Decimal("5"))
    assert await book(engine, "evt_rf", failed) is True
    assert await funded(engine, account_id) == 20
    dispute = Dispute("evt_d", "pi_p", "ch_1", "dp_1", Decimal("20"))
    assert await book(engine, "evt_d", dispute) is True
    assert await funded(engine, account_id) == 0
    won = DisputeWon("evt_w", "pi_p", "ch_1", "dp_1", Decimal("20"))
    assert await book(engine, "evt_w", won) is True
    assert await funded(engine, account_id) == 20
    async with engine.connect() as conn:
        (lot,) = (await conn.execute(credit_lots.select())).all()
    assert lot.remaining == 20  # taken from the purchase's own lot, and given back to it


async def test_money_is_taken_back_only_for_a_payment_that_credited(engine):
    stranger = Refund("evt_s", "pi_unknown", None, "re_9", Decimal("3"))
    assert await book(engine, "evt_s", stranger) is False


async def test_a_top_up_is_marked_by_its_outcome(engine):
    account_id = await new_account(engine)
    async with engine.begin() as conn:
        paid = await service.open_topup(conn, account_id, "checkout", Decimal("10"))
        declined = await service.open_topup(conn, account_id, "auto", Decimal("10"))
    await book(engine, "evt_ok", purchase("evt_ok", "pi_ok", account_id, topup=paid.id))
    fail = PaymentFailed(
        "evt_no", "pi_no", account_id, declined.id, "card_declined", "declined", None, "generic"
    )
    assert await book(engine, "evt_no", fail) is False
    without = PaymentFailed("evt_n2", None, account_id, None, "expired", "gone")
    assert await book(engine, "evt_n2", without) is False
    async with engine.connect() as conn:
        rows = {r.id: r for r in (await conn.execute(credit_topups.select())).all()}
    assert (rows[paid.id].status, rows[paid.id].payment_intent) == ("succeeded", "pi_ok")
    assert (rows[declined.id].status, rows[declined.id].failure_code) == ("failed", "generic")
    assert rows[declined.id].failure_message == "declined"
    assert await book(engine, "evt_none", None) is False  # an event that states nothing


async def test_an_attempt_ends_once_and_only_auto_top_ups_count_failures(engine):
    """A decline answered by Stripe and the same decline as a webhook end the attempt
    once and count once; a failed Checkout is no auto top-up failure."""
    account_id = await new_account(engine)
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        auto = await service.open_topup(conn, account_id, "auto", Decimal("10"))
        checkout = await service.open_topup(conn, account_id, "checkout", Decimal("10"))
    async with engine.begin() as conn:
        assert await attempts.failed(conn, auto.id, "card_declined", "declined", now, "pi_1")
        assert not await attempts.failed(conn, auto.id, "card_declined", "again", now)
        assert await attempts.failed(conn, checkout.id, "expired", "session expired", now)
    async with engine.connect() as conn:
        account = await service.get_account(conn, account_id)
        rows = {r.id: r for r in await service.topups(conn, account_id)}
    assert account.auto_topup_failures == 1
    assert (rows[auto.id].failure_message, rows[auto.id].payment_intent) == ("declined", "pi_1")
    assert (rows[checkout.id].status, rows[checkout.id].payment_intent) == ("failed", None)


async def test_a_payment_naming_a_top_up_we_do_not_know_is_credited_all_the_same(engine):
    """Its metadata names a top-up there is no row of (a database restored from before the
    Checkout): the money is ours to credit, and nothing else is marked."""
    account_id = await new_account(engine)
    fact = purchase("evt_lost", "pi_lost", account_id, topup="top_unknown")
    assert await book(engine, "evt_lost", fact) is True
    assert await funded(engine, account_id) == Decimal("10")
    async with engine.connect() as conn:
        assert await service.topups(conn, account_id) == []
        assert await attempts.succeeded(conn, "top_unknown", "pi_lost", datetime.now(UTC)) is None
