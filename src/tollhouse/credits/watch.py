"""The balance watch: where balance alerts and auto top-ups are decided, off the request
path and bounded.

Two ways an account gets checked, both in one background task per server:

- **After its usage posts commit.** The usage recorder calls ``posted`` with each batch
  it has written (synchronous, O(batch)); the accounts it names are checked on the next
  pass. Funding written through the API (grants, Stripe webhooks, account updates) calls
  ``touched`` the same way. Passes are at least ``gap_s`` apart (``credits_watch_gap_s``,
  0.25 s) and take at most ``batch`` touched accounts each, so however busy the gateway,
  a server checks at most ``batch / gap_s`` accounts a second (400), each costing one
  row read (and, with auto top-up on, one look at admission's live counter).
- **Every ``interval_s``** (``credits_sweep_interval_s``), a scan of the accounts whose
  journal balance says their alert state is stale or an auto top-up is due, at most
  ``batch`` of them per pass, continuing from where the last pass stopped — so changes no
  one touched (an expiry, a refund, another replica's writes) are seen within one
  interval, and a scan never reads the whole table at once.

A check reads the account, moves its alert state when its settled balance says so
(``alerting.cross``, one transaction), and, when an auto top-up is due, starts it
in a task of its own — at most ``max_charges`` at a time per server, one per account —
so a slow Stripe holds up neither alerts nor other accounts. After a top-up is paid the
account is checked again (``credit_recovered``) and this server's admission reloads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, case, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from tollhouse.background import woken
from tollhouse.credits import alerting
from tollhouse.credits.alerting import AlertSink, cross, ever_used, used
from tollhouse.credits.autotopup import AutoTopups, Live, due
from tollhouse.credits.models import credit_accounts
from tollhouse.credits.service import balance_of

log = logging.getLogger("tollhouse.credits")

ZERO = Decimal(0)
_a = credit_accounts.c


class BalanceWatch:
    def __init__(
        self, engine: AsyncEngine, interval_s: float, *, batch: int = 100, gap_s: float = 0.25
    ) -> None:
        self._engine = engine
        self._interval_s = interval_s
        self._gap_s = gap_s  # between passes: a busy account is checked 1/gap_s times a second
        self._batch = batch
        self._live: Live | None = None
        self._sink: AlertSink | None = None
        self._topups: AutoTopups | None = None
        self._on_change: Callable[[], Awaitable[None]] | None = None
        self._notify: Callable[[], None] | None = None
        self.max_charges = 4
        self._touched: dict[str, None] = {}  # insertion-ordered set
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._charging: dict[str, asyncio.Task[None]] = {}
        self._cursor = ""
        self.crossings = 0  # alerts this server wrote

    # -- wiring --------------------------------------------------------------------

    def posted(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """The usage recorder wrote ``rows``: check the accounts that paid for them."""
        self.touched(r["credit_account_id"] for r in rows if r.get("credit_account_id"))

    def touched(self, account_ids: Iterable[str]) -> None:
        """Check these accounts soon (synchronous; never raises)."""
        for account_id in account_ids:
            self._touched[account_id] = None
        if self._touched:
            self._wake.set()

    async def start(
        self,
        *,
        live: Live | None = None,
        sink: AlertSink | None = None,
        topups: AutoTopups | None = None,
        on_change: Callable[[], Awaitable[None]] | None = None,
        notify: Callable[[], None] | None = None,
    ) -> None:
        """Start checking: ``live`` is admission's view of an account, ``sink`` writes
        alerts (``notify`` after they commit), ``topups`` charges (``None``: auto top-up
        is off), ``on_change`` runs after money moved."""
        self._live, self._sink, self._topups = live, sink, topups
        self._on_change, self._notify = on_change, notify
        self._task = asyncio.create_task(self._run(), name="tollhouse-balance-watch")

    async def stop(self) -> None:
        tasks = [t for t in (self._task, *self._charging.values()) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._task = None
        self._charging.clear()

    # -- checks --------------------------------------------------------------------

    async def run_once(self, scan: bool = True) -> int:
        """One pass now (tests, and the loop): the touched accounts, and with ``scan`` the
        stale ones; how many were checked."""
        ids = self._take()
        if scan:
            ids.extend(i for i in await self.stale() if i not in ids)
        for account_id in ids:
            try:
                await self.check(account_id)
            except Exception:  # one account's failure does not hold up the others
                log.exception("balance check failed", extra={"account_id": account_id})
        return len(ids)

    async def idle(self) -> None:
        """Wait for the auto top-ups this server started (tests)."""
        while self._charging:
            await asyncio.gather(*self._charging.values(), return_exceptions=True)

    async def check(self, account_id: str) -> None:
        """Move the account's alert state, and start its auto top-up when due."""
        async with self._engine.connect() as conn:
            found = await conn.execute(select(credit_accounts).where(_a.id == account_id))
            account = found.one_or_none()
            if account is None or not await used(conn, account):
                return  # never funded nor spent: nothing to alert or top up
        # Admission's live view only matters to auto top-up (alerts read the journal).
        charging = self._topups is not None and account.auto_topup_enabled
        live = await self._live_of(account_id) if charging else None
        balance = balance_of(account, live)
        crossing = None
        if self._sink is not None and alerting.stale(account):
            # Its own transaction, opened by the conditional UPDATE (on SQLite a write
            # first waits for the lock, where a read then a write could not).
            async with self._engine.begin() as conn:
                crossing = await cross(conn, account, balance, self._sink, datetime.now(UTC))
        if crossing is not None:
            self.crossings += 1
            log.info(
                "credit balance alert",
                extra={"account_id": account_id, "event": crossing.event},
            )
            if self._notify is not None:
                self._notify()
        if charging and due(account, balance):
            self._start_charge(account_id, live)

    async def stale(self) -> list[str]:
        """Up to ``batch`` accounts, from the scan's cursor on, whose journal balance puts
        them in another alert state than they are in, or below their auto top-up
        threshold."""
        total = _a.funded - _a.spent
        state = case(
            (total <= ZERO, "depleted"),
            (and_(_a.low_balance.is_not(None), total < _a.low_balance), "low"),
            else_="ok",
        )
        wanted = [state != _a.alert_state]
        if self._topups is not None:
            wanted.append(
                and_(
                    _a.auto_topup_enabled,
                    _a.auto_topup_amount.is_not(None),
                    _a.stripe_customer.is_not(None),
                    _a.stripe_payment_method.is_not(None),
                    total < _a.auto_topup_threshold,
                )
            )
        query = (
            select(_a.id)
            .where(or_(*wanted), ever_used(), _a.id > self._cursor)
            .order_by(_a.id)
            .limit(self._batch)
        )
        async with self._engine.connect() as conn:
            ids = [str(i) for i in (await conn.execute(query)).scalars()]
        # A full page: the next pass goes on after it; else it starts over.
        self._cursor = ids[-1] if len(ids) == self._batch else ""
        return ids

    async def _live_of(self, account_id: str) -> tuple[Decimal, Decimal] | None:
        if self._live is None:
            return None
        try:
            return await self._live(account_id)
        except Exception:  # the meter is away: the journal's figures will do
            log.warning("live credit usage unavailable", extra={"account_id": account_id})
            return None

    def _start_charge(self, account_id: str, live: tuple[Decimal, Decimal] | None) -> None:
        if account_id in self._charging or len(self._charging) >= self.max_charges:
            return  # one per account; the rest wait for a later pass
        task = asyncio.create_task(self._charge(account_id, live), name="tollhouse-auto-topup")
        self._charging[account_id] = task

    async def _charge(self, account_id: str, live: tuple[Decimal, Decimal] | None) -> None:
        assert self._topups is not None
        try:
            result = await self._topups.check(account_id, live)
            if result == "succeeded" and self._on_change is not None:
                await self._on_change()
            if result is not None:
                await self.check(account_id)  # credit_recovered, or the next attempt
        except Exception:
            log.exception("auto top-up check failed", extra={"account_id": account_id})
        finally:
            self._charging.pop(account_id, None)

    def _take(self) -> list[str]:
        ids = list(self._touched)[: self._batch]
        for account_id in ids:
            del self._touched[account_id]
        if self._touched:
            self._wake.set()  # more than one batch: another pass right away
        return ids

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_scan = loop.time() + self._interval_s
        while True:
            await woken(self._wake, max(0.0, next_scan - loop.time()))
            self._wake.clear()
            scan = loop.time() >= next_scan
            try:
                await self.run_once(scan=scan)
            except Exception:  # the database is away: the next pass retries
                log.exception("balance watch pass failed")
            if scan:
                next_scan = loop.time() + self._interval_s
            await asyncio.sleep(self._gap_s)
