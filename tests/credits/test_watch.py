"""The balance watch and the credits sweeper on their own, on a real database: touched
accounts are taken a batch per pass, one account's failed check does not hold up the
others, admission's live view away leaves the journal's figures, a failed auto top-up
frees its account for a later pass, and both background loops outlive a database that
is away (each pass logs and the next one retries)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from tests.credits.books import grant, open_customer_account
from tests.credits.stripe_support import stripe_settings
from tests.support import engine_for, wait_until

from tollhouse.alerts.models import alert_events
from tollhouse.alerts.service import AlertService
from tollhouse.credits.autotopup import AutoTopups
from tollhouse.credits.lots import lock_account
from tollhouse.credits.service import get_account, topups
from tollhouse.credits.stripe import Payments
from tollhouse.credits.watch import BalanceWatch
from tollhouse.credits.worker import CreditSweeper

AUTO = {"enabled": True, "threshold": Decimal(5), "amount": Decimal(10)}


async def depleted_account(engine: AsyncEngine, name: str, **more: Any) -> str:
    """An account funded and then emptied: its alert state is stale (``ok``, not
    ``depleted``)."""
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        account_id = await open_customer_account(conn, name, **more)
        await grant(conn, account_id, "1", now)
        await grant(conn, account_id, "-1", now, category="adjustment")
    return account_id


async def credit_events(engine: AsyncEngine) -> list[Any]:
    async with engine.connect() as conn:
        return list(
            (await conn.execute(select(alert_events.c.scope_id, alert_events.c.event))).all()
        )


@contextlib.asynccontextmanager
async def away(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """An engine on a database that cannot be opened (its directory is missing)."""
    async with engine_for(
        f"sqlite+aiosqlite:///{tmp_path / 'gone' / 'x.db'}", migrated=False
    ) as engine:
        yield engine


async def logged(caplog: Any, message: str, times: int) -> None:
    """Wait until ``message`` has been logged ``times`` times."""

    async def enough() -> bool:
        return sum(r.getMessage() == message for r in caplog.records) >= times

    await wait_until(enough, within=5, what=f"{times} x {message!r}")


@contextlib.asynccontextmanager
async def watching(engine: AsyncEngine, **start: Any) -> AsyncIterator[BalanceWatch]:
    watch = BalanceWatch(engine, 3600)
    await watch.start(**start)
    try:
        yield watch
    finally:
        await watch.stop()


async def test_touched_accounts_are_taken_a_batch_per_pass(sqlite_engine):
    watch = BalanceWatch(sqlite_engine, 3600, batch=2)  # passes run here, not by its loop
    watch.posted([{"credit_account_id": None}, {"credit_account_id": ""}])
    assert not watch._wake.is_set()  # a batch no account paid for wakes nothing
    watch.touched(["acct_1", "acct_2", "acct_3"])
    assert await watch.run_once(scan=False) == 2
    assert watch._wake.is_set()  # the rest: another pass right away
    assert await watch.run_once(scan=False) == 1
    assert await watch.run_once(scan=False) == 0


async def test_one_accounts_failed_check_does_not_hold_up_the_others(pg_engine):
    """Account ``a`` is held by a long transaction; its check gives up on the lock, is
    logged, and ``b``'s check still alerts in the same pass."""
    a = await depleted_account(pg_engine, "a")
    b = await depleted_account(pg_engine, "b")
    impatient = create_async_engine(
        pg_engine.url, connect_args={"server_settings": {"lock_timeout": "200ms"}}
    )
    try:
        async with watching(impatient, sink=AlertService(impatient)) as watch:
            async with pg_engine.connect() as holder:
                await holder.begin()
                assert await lock_account(holder, a) is not None
                watch.touched([a, b])
                assert await watch.run_once(scan=False) == 2
                await holder.rollback()
            assert watch.crossings == 1
            async with pg_engine.connect() as conn:
                owner = (await get_account(conn, b)).owner_id
            assert await credit_events(pg_engine) == [(owner, "credit_depleted")]
            watch.touched([a])  # the next pass: a alerts too
            await watch.run_once(scan=False)
            assert watch.crossings == 2
    finally:
        await impatient.dispose()


async def test_without_admissions_live_view_the_journals_figures_decide(
    sqlite_engine, stripe_checkout, caplog
):
    """Auto top-up is due by the journal alone, whether admission's live view is not
    wired in or away (logged): the card is charged once each."""
    engine = sqlite_engine
    settings = stripe_settings(stripe_checkout.url)
    async with Payments(settings, checkout=False) as client:
        charging = AutoTopups(
            engine, client, retry_after=timedelta(0), redrive_after=timedelta(minutes=5)
        )

        async def meter_away(account_id: str) -> tuple[Decimal, Decimal] | None:
            raise ConnectionError("the meter is away")

        auto = AUTO | {"stripe_customer": "cus_1", "stripe_payment_method": "pm_card_visa"}
        for live in (None, meter_away):
            account_id = await depleted_account(engine, f"acme-{live}", auto_topup=auto)
            with caplog.at_level(logging.WARNING, logger="tollhouse.credits"):
                async with watching(engine, topups=charging, live=live) as watch:
                    watch.touched([account_id])
                    await watch.run_once(scan=False)
                    await watch.idle()
            async with engine.connect() as conn:
                assert [t.status for t in await topups(conn, account_id)] == ["succeeded"]
    warnings = [r for r in caplog.records if r.getMessage() == "live credit usage unavailable"]
    assert len(warnings) >= 1


async def test_an_auto_top_up_that_fails_is_logged_and_frees_its_account(
    sqlite_engine, tmp_path, caplog
):
    auto = AUTO | {"stripe_customer": "cus_1", "stripe_payment_method": "pm_card_visa"}
    account_id = await depleted_account(sqlite_engine, "acme", auto_topup=auto)
    settings = stripe_settings("http://127.0.0.1:9")
    async with away(tmp_path) as gone, Payments(settings, checkout=False) as client:
        # Its attempts are written to a database that is away.
        charging = AutoTopups(
            gone, client, retry_after=timedelta(0), redrive_after=timedelta(minutes=5)
        )
        with caplog.at_level(logging.ERROR, logger="tollhouse.credits"):
            async with watching(sqlite_engine, topups=charging) as watch:
                for _ in range(2):  # freed: the next pass starts it again
                    watch.touched([account_id])
                    await watch.run_once(scan=False)
                    await watch.idle()
    failed = [r for r in caplog.records if r.getMessage() == "auto top-up check failed"]
    assert len(failed) == 2


async def test_the_watch_outlives_a_database_that_is_away(tmp_path, caplog):
    async with away(tmp_path) as gone:
        watch = BalanceWatch(gone, 0.01)
        with caplog.at_level(logging.ERROR, logger="tollhouse.credits"):
            await watch.start()
            try:
                await logged(caplog, "balance watch pass failed", 2)
            finally:
                await watch.stop()


async def test_the_sweeper_outlives_a_database_that_is_away(tmp_path, caplog):
    async with away(tmp_path) as gone:
        sweeper = CreditSweeper(gone, 0.01)
        await sweeper.stop()  # never started: nothing to stop
        with caplog.at_level(logging.ERROR, logger="tollhouse.credits"):
            await sweeper.start()
            try:
                await logged(caplog, "credit sweep failed", 2)
            finally:
                await sweeper.stop()
        await sweeper.stop()  # stopping twice is harmless
