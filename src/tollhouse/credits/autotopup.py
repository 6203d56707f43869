"""Auto top-up: charge the saved card once when ``available`` falls below the threshold.

An account is **due** when auto top-up is enabled with a threshold, an amount, a Stripe
customer and a payment method, it has been funded or spent before, and ``available``
(the journal's total less what requests in flight hold, admission's live view when this
process has one) is below ``auto_topup_threshold``.

A due account gets at most one charge in flight, decided under the account's row lock
and by the database:

1. **The attempt first.** A ``credit_topups`` row (kind ``auto``, ``pending``) is
   committed before Stripe is called; its id is the charge's idempotency key
   (``tollhouse:charge:<attempt>``), so however often the charge is sent, by us or by the
   Stripe library's retries, it is one PaymentIntent. A partial unique index allows one
   pending auto top-up per account, so a second replica's insert fails.
2. **Nothing while one is unsettled.** No new attempt while one is ``pending``, nor while
   one ``succeeded`` less than ``UNBOOKED_GRACE`` ago without its purchase in the journal.
3. **The monthly cap.** Auto top-ups ``succeeded`` or ``pending`` since the start of the
   calendar month (UTC) plus this amount must not exceed ``auto_topup_monthly_cap``;
   when they would, nothing is charged or recorded as an attempt and the reason is kept
   on the account (``auto_topup_skipped_reason``, shown in its ``auto_topup``).
4. **Failures back off.** After a failed attempt (a decline, a card that needs its
   owner, Stripe out of reach once the library's retries are spent), the next waits
   ``retry_after``; the ``attempts.MAX_FAILURES``-th failure in a row turns auto top-up
   off with the reason.

The outcome: ``succeeded`` books the purchase at once, keyed ``stripe:purchase:<pi>`` like
the ``payment_intent.succeeded`` webhook, so it is credited once whichever is first;
``processing`` (a delayed method) stays pending for the webhook to settle; ``failed`` and
``requires_action`` end the attempt and count. A pending attempt that never got an answer
(the process died mid-call) is sent again under its own key after ``redrive_after``.

The ``stripe`` library is an optional extra: ``payments`` (which reads Stripe's facts) is
imported only when a charge is made.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Literal, Protocol

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tollhouse.config import Settings
from tollhouse.credits import attempts
from tollhouse.credits.alerting import used
from tollhouse.credits.lots import lock_account
from tollhouse.credits.models import credit_accounts, credit_topups, credit_transactions
from tollhouse.credits.service import Balance, balance_of, open_topup
from tollhouse.errors import TollhouseError
from tollhouse.money import format_usd

log = logging.getLogger("tollhouse.credits")

Live = Callable[[str], Awaitable[tuple[Decimal, Decimal] | None]]
Result = Literal["succeeded", "processing", "failed", "requires_action", "error"]

UNBOOKED_GRACE = timedelta(minutes=10)
_a = credit_accounts.c
_t = credit_topups.c
_x = credit_transactions.c

NEEDS_OWNER = (
    "the card needs its owner: the bank asks the card holder to authenticate this payment "
    "(3-D Secure), which a charge made without them cannot do"
)


class Charger(Protocol):
    """``stripe.Payments`` as auto top-up uses it."""

    async def charge_off_session(
        self,
        attempt_id: str,
        *,
        customer: str,
        payment_method: str,
        amount: Decimal,
        account_id: str,
    ) -> Any: ...


@dataclass(frozen=True, slots=True)
class Attempt:
    """A pending auto top-up to send to Stripe, with the card to charge."""

    id: str
    account_id: str
    amount: Decimal
    customer: str
    payment_method: str


def due(account: Any, balance: Balance) -> bool:
    """Whether ``account`` wants an auto top-up at ``balance`` (limits aside, and
    provided the journal has moved it at all: ``alerting.used``)."""
    return bool(
        account.auto_topup_enabled
        and account.auto_topup_threshold is not None
        and account.auto_topup_amount is not None
        and account.stripe_customer
        and account.stripe_payment_method
        and balance.available < account.auto_topup_threshold
    )


def month_start(now: datetime) -> datetime:
    return now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


async def month_total(conn: AsyncConnection, account_id: str, now: datetime) -> Decimal:
    """Auto top-ups succeeded or pending since the calendar month (UTC) began."""
    total = await conn.execute(
        select(func.coalesce(func.sum(_t.amount), 0)).where(
            _t.account_id == account_id,
            _t.kind == "auto",
            _t.status.in_(("pending", "succeeded")),
            _t.created_at >= month_start(now),
        )
    )
    return Decimal(total.scalar() or 0)  # a Money sum, read back as dollars


async def _latest(conn: AsyncConnection, account_id: str) -> list[Any]:
    query = (
        select(credit_topups)
        .where(_t.account_id == account_id, _t.kind == "auto")
        .order_by(_t.created_at.desc(), _t.id)
        .limit(5)
    )
    return list((await conn.execute(query)).all())


async def _booked(conn: AsyncConnection, payment_intent: str) -> bool:
    """Whether the purchase of a succeeded attempt is in the journal (an attempt succeeds
    with its PaymentIntent: ``attempts.succeeded``)."""
    key = f"stripe:purchase:{payment_intent}"
    found = await conn.execute(select(_x.seq).where(_x.key == key))
    return found.first() is not None


class AutoTopups:
    """Decides and makes auto top-up charges (``watch.BalanceWatch`` calls ``check``)."""

    def __init__(
        self,
        engine: AsyncEngine,
        payments: Charger,
        *,
        retry_after: timedelta,
        redrive_after: timedelta,
    ) -> None:
        self._engine = engine
        self._payments = payments
        self._retry_after = retry_after
        self._redrive_after = redrive_after
        self.charges = 0  # sent to Stripe by this process (retries of an attempt too)

    async def check(self, account_id: str, live: tuple[Decimal, Decimal] | None) -> Result | None:
        """Charge the account if it is due and nothing holds it back; what the charge
        came to, or ``None`` when none was sent."""
        now = datetime.now(UTC)
        async with self._engine.begin() as conn:
            attempt = await self.open_attempt(conn, account_id, live, now)
        if attempt is None:
            return None
        return await self.charge(attempt)

    async def open_attempt(
        self,
        conn: AsyncConnection,
        account_id: str,
        live: tuple[Decimal, Decimal] | None,
        now: datetime,
    ) -> Attempt | None:
        """Under the account's lock: the attempt to send now (new, or one to send again),
        or ``None``."""
        account = await lock_account(conn, account_id)
        if account is None or not due(account, balance_of(account, live)):
            return None
        if not await used(conn, account):
            return None
        recent = await _latest(conn, account_id)
        pending = next((r for r in recent if r.status == "pending"), None)
        if pending is not None:
            return await self._redrive(conn, account, pending, now)
        for row in recent:
            if (
                row.status == "succeeded"
                and now - row.updated_at < UNBOOKED_GRACE
                and not await _booked(conn, row.payment_intent)
            ):
                return None  # paid, its credit not booked yet: not another charge
        last = recent[0] if recent else None
        if (
            account.auto_topup_failures
            and last is not None
            and last.status == "failed"
            and now - last.updated_at < self._retry_after
        ):
            return None  # backing off after a failure
        amount: Decimal = account.auto_topup_amount
        cap = account.auto_topup_monthly_cap
        if cap is not None:
            so_far = await month_total(conn, account_id, now)
            if so_far + amount > cap:
                await self._skipped(conn, account, _capped(so_far, amount, cap, now))
                return None
        try:
            async with conn.begin_nested():
                row = await open_topup(conn, account_id, "auto", amount)
        except IntegrityError:
            return None  # another replica's attempt is pending (the partial unique index)
        if account.auto_topup_skipped_reason is not None:
            await self._skipped(conn, account, None)
        log.info(
            "auto top-up started",
            extra={"account_id": account_id, "topup_id": row.id, "amount": str(amount)},
        )
        return Attempt(
            row.id, account_id, amount, account.stripe_customer, account.stripe_payment_method
        )

    async def _redrive(
        self, conn: AsyncConnection, account: Any, pending: Any, now: datetime
    ) -> Attempt | None:
        """A pending attempt Stripe never answered (no PaymentIntent) for ``redrive_after``:
        claimed (one replica) and sent again under its own key."""
        if pending.payment_intent is not None or now - pending.updated_at < self._redrive_after:
            return None  # in flight, or processing: its webhook settles it
        claimed = await conn.execute(
            update(credit_topups)
            .where(_t.id == pending.id, _t.status == "pending", _t.updated_at == pending.updated_at)
            .values(updated_at=now)
        )
        if claimed.rowcount != 1:
            return None
        log.warning(
            "auto top-up sent again: Stripe's answer never came",
            extra={"account_id": account.id, "topup_id": pending.id},
        )
        return Attempt(
            pending.id,
            account.id,
            pending.amount,
            account.stripe_customer,
            account.stripe_payment_method,
        )

    async def _skipped(self, conn: AsyncConnection, account: Any, reason: str | None) -> None:
        if account.auto_topup_skipped_reason == reason:
            return
        if reason is not None:
            log.warning("auto top-up skipped", extra={"account_id": account.id, "reason": reason})
        await conn.execute(
            update(credit_accounts)
            .where(_a.id == account.id)
            .values(auto_topup_skipped_reason=reason)
        )

    async def charge(self, attempt: Attempt) -> Result:
        """Send the attempt to Stripe and book what it answers."""
        self.charges += 1
        try:
            charge = await self._payments.charge_off_session(
                attempt.id,
                customer=attempt.customer,
                payment_method=attempt.payment_method,
                amount=attempt.amount,
                account_id=attempt.account_id,
            )
        except TollhouseError as exc:
            # Out of reach after the library's retries under the same key, a key reused
            # with other parameters (the card changed meanwhile), an amount Stripe cannot
            # charge (not whole cents). Should Stripe have charged after all, its
            # payment_intent.succeeded books the credit and marks this attempt succeeded.
            await self._ended(attempt, exc.code, exc.message, None)
            return "error"
        if charge.status == "succeeded" and charge.payment_intent_id is not None:
            from tollhouse.credits.payments import book_charge  # the optional stripe extra

            async with self._engine.begin() as conn:
                await book_charge(
                    conn, attempt.id, attempt.account_id, charge.payment_intent_id, attempt.amount
                )
            log.info(
                "auto top-up paid",
                extra={"account_id": attempt.account_id, "topup_id": attempt.id},
            )
            return "succeeded"
        if charge.status == "processing":
            async with self._engine.begin() as conn:
                await conn.execute(
                    update(credit_topups)
                    .where(_t.id == attempt.id, _t.status == "pending")
                    .values(payment_intent=charge.payment_intent_id, updated_at=datetime.now(UTC))
                )
            return "processing"
        if charge.status == "requires_action":
            message = NEEDS_OWNER
            code = "authentication_required"
        else:
            message = charge.failure_message or "the card was declined"
            code = charge.decline_code or charge.failure_code or "card_declined"
        await self._ended(attempt, code, message, charge.payment_intent_id)
        return "requires_action" if charge.status == "requires_action" else "failed"

    async def _ended(
        self, attempt: Attempt, code: str, message: str, payment_intent: str | None
    ) -> None:
        async with self._engine.begin() as conn:
            ended = await attempts.failed(
                conn, attempt.id, code, message, datetime.now(UTC), payment_intent
            )
        log.warning(
            "auto top-up failed",
            extra={
                "account_id": attempt.account_id,
                "topup_id": attempt.id,
                "code": code,
                "counted": ended,  # False: a webhook had ended it already
            },
        )


def _capped(so_far: Decimal, amount: Decimal, cap: Decimal, now: datetime) -> str:
    return (
        f"monthly cap: {format_usd(so_far)} USD of auto top-ups in {now:%Y-%m} (UTC) and "
        f"{format_usd(amount)} USD more would pass the cap of {format_usd(cap)} USD; none "
        "until next month or a higher cap"
    )


async def start(
    settings: Settings, engine: AsyncEngine
) -> tuple[AutoTopups, Callable[[], Awaitable[None]]] | None:
    """Auto top-ups over Stripe as configured, with the call that closes its client; or
    ``None`` — inert — when Stripe is not configured, with a warning when accounts have
    auto top-up enabled all the same."""
    why = None
    if settings.stripe_secret_key is None:
        why = "TOLLHOUSE_STRIPE_SECRET_KEY is not set"
    else:
        try:
            from tollhouse.credits.stripe import Payments  # the optional stripe extra
        except ImportError:
            why = "the stripe library is not installed (pip install 'tollhouse[stripe]')"
    if why is not None:
        try:
            async with engine.connect() as conn:
                query = select(func.count()).where(_a.auto_topup_enabled.is_(True))
                enabled = (await conn.execute(query)).scalar()
        except Exception as exc:  # the server starts without its database (docs/ledger.md)
            log.warning("auto top-up is off: %s (accounts not checked: %r)", why, exc)
            return None
        if enabled:
            log.warning(
                "auto top-up is off: %s; %d account(s) have it enabled and will not be charged",
                why,
                enabled,
            )
        return None
    payments = Payments(settings, checkout=False)
    retries = settings.stripe_max_network_retries + 1
    topups = AutoTopups(
        engine,
        payments,
        retry_after=timedelta(seconds=settings.credits_auto_topup_retry_s),
        # Longer than any one charge can take with the library's retries.
        redrive_after=timedelta(seconds=settings.stripe_timeout_s * retries + 60),
    )
    return topups, payments.aclose
