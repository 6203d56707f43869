"""Draw-down is a function of the journal's order, not of when allocation happens to run:
usage is drawn from the lots there were when it was booked (a grant made later repays
only what no lot covered), so the sweeper allocating in between, or not, changes
nothing — and an expiring promotion gives up what it still held. On Postgres, a post
numbered while an allocation holds the account is drawn later, never skipped; and a
grant beside a Stripe purchase on the same account does not deadlock."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from sqlalchemy import func, select
from tests.credits.books import (
    grant,
    open_customer_account,
    record_usage,
    usage_record,
    waiting_on_a_lock,
)
from tests.support import wait_until

from tollhouse.credits import journal, lots, payments, service
from tollhouse.credits.models import credit_lots, credit_transactions
from tollhouse.credits.stripe_events import Purchase
from tollhouse.credits.verify import verify
from tollhouse.governance.service import bump_version


async def remaining(engine, lot_id: str) -> Decimal:
    async with engine.connect() as conn:
        query = select(credit_lots.c.remaining).where(credit_lots.c.id == lot_id)
        return Decimal((await conn.execute(query)).scalar_one())


async def test_usage_is_drawn_from_the_lots_there_were_when_it_was_booked(engine):
    now = datetime.now(UTC)
    tomorrow = now + timedelta(days=1)
    outcomes = []
    for allocate_between in (False, True):
        async with engine.begin() as conn:
            account = await open_customer_account(conn, f"acme-{allocate_between}")
            paid = await grant(conn, account, "10", now, priority=100)
        await record_usage(engine, [usage_record(account, Decimal("4"), now)])
        if allocate_between:  # e.g. the sweeper expiring some other lot meanwhile
            async with engine.begin() as conn:
                await lots.allocate(conn, account)
        async with engine.begin() as conn:
            promo = await grant(
                conn, account, "5", now, priority=5, expires_at=tomorrow.isoformat()
            )
        outcomes.append((await remaining(engine, paid.id), await remaining(engine, promo.id)))
        async with engine.begin() as conn:
            await service.run_due(conn, tomorrow)
            t = credit_transactions.c
            expired = await conn.scalar(select(t.amount).where(t.key == f"expire:{promo.id}"))
            assert expired == Decimal("-5")  # the promotion paid for nothing before it
            assert (await verify(conn, account)).ok
    # Usage booked before the promotion existed was paid from the lot there was.
    assert outcomes == [(Decimal("6"), Decimal("5"))] * 2


async def test_a_post_booked_while_an_allocation_holds_the_account_is_drawn_later(pg_engine):
    """Postgres numbers movements when they are inserted and commits them later: a post
    numbered while an allocation holds the account must not be skipped by it (the
    allocation would move past a number whose movement it cannot see yet)."""
    engine = pg_engine
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        account = await open_customer_account(conn, "acme")
        paid = await grant(conn, account, "10", now)
    async with engine.connect() as conn:
        await conn.begin()
        await lots.lock_account(conn, account)  # as every allocation does
        writing = asyncio.create_task(
            record_usage(engine, [usage_record(account, Decimal("4"), now)])
        )
        await wait_until(lambda: waiting_on_a_lock(engine), what="the post waiting")
        await grant(conn, account, "1", now, priority=50)  # allocates, funds, allocates
        await conn.commit()
    await writing
    async with engine.begin() as conn:
        report = await verify(conn)
        assert report.ok, report.differences
        await lots.allocate(conn, account)
    assert await remaining(engine, paid.id) == Decimal("6")


async def test_a_grant_and_a_stripe_purchase_on_one_account_do_not_deadlock(pg_engine):
    """Every credits write takes the governance version first, then the account: a grant
    holding the version while a purchase waits never waits for that purchase in turn."""
    engine = pg_engine
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        account = await open_customer_account(conn, "acme")
    purchase = Purchase("evt_dl", "pi_dl", Decimal("20"), account, None, "checkout")

    async def pay() -> bool | None:
        async with engine.begin() as conn:
            return await payments.book_event(conn, "evt_dl", "checkout.session.completed", purchase)

    async with engine.connect() as conn:
        await conn.begin()
        await bump_version(conn)  # as a grant starts
        paying = asyncio.create_task(pay())
        await wait_until(lambda: waiting_on_a_lock(engine), what="the purchase waiting")
        await grant(conn, account, "1", now)  # then takes the account
        await conn.commit()
    assert await paying is True
    async with engine.connect() as conn:
        row = await service.get_account(conn, account)
        assert (row.funded, row.spent) == (Decimal("21"), 0)
        assert (await verify(conn)).ok


async def test_two_sweepers_expire_a_lot_once(sqlite_engine):
    """Replicas sweep side by side: the second to reach an expired lot books nothing."""
    engine = sqlite_engine
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        account = await open_customer_account(conn, "acme")
        promo = await grant(
            conn, account, "5", now, expires_at=(now + timedelta(hours=1)).isoformat()
        )
    later = now + timedelta(hours=2)
    async with engine.begin() as conn:
        _, ending = await lots.due(conn, later)
    assert ending == [promo.id]
    async with engine.begin() as conn:
        assert await lots.expire(conn, promo.id, later) == Decimal("5")
    async with engine.begin() as conn:  # the other sweeper, with the list it read before
        assert await lots.expire(conn, promo.id, later) == 0
        t = credit_transactions.c
        expiries = await conn.scalar(
            select(func.count()).where(t.account_id == account, t.kind == "expire")
        )
        assert expiries == 1
        assert (await verify(conn, account)).ok


async def test_allocating_an_account_there_is_not_does_nothing(sqlite_engine):
    async with sqlite_engine.begin() as conn:
        await lots.allocate(conn, "acct_none")
        assert await lots.lock_account(conn, "acct_none") is None
        assert (await verify(conn)).ok


async def test_booking_no_movements_books_nothing(sqlite_engine):
    async with sqlite_engine.begin() as conn:
        account = await open_customer_account(conn, "acme")
        assert await journal.book_many(conn, []) == []
        assert await conn.scalar(select(func.count()).select_from(credit_transactions)) == 0
        assert (await service.get_account(conn, account)).revision == 1


async def test_a_lot_spent_to_the_last_cent_expires_without_a_movement(sqlite_engine):
    engine = sqlite_engine
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        account = await open_customer_account(conn, "acme")
        expires = (now + timedelta(hours=1)).isoformat()
        promo = await grant(conn, account, "2", now, expires_at=expires)
    await record_usage(engine, [usage_record(account, Decimal("2"), now)])
    async with engine.begin() as conn:
        assert await service.run_due(conn, now + timedelta(hours=2)) == (0, 1)
        t = credit_transactions.c
        kinds = (await conn.execute(select(t.kind).where(t.account_id == account))).scalars()
        assert sorted(kinds) == ["grant", "post"]
        lot = (await conn.execute(select(credit_lots).where(credit_lots.c.id == promo.id))).one()
        assert (lot.status, lot.remaining) == ("expired", 0)
        assert (await verify(conn, account)).ok
