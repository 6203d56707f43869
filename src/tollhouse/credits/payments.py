"""Stripe facts booked in the journal: each event once, each payment once.

``book_event`` runs in one database transaction: it first inserts the event's id into
``stripe_events`` (a second delivery of the same event inserts nothing and stops
there), then books the movement the fact states under the fact's own unique key
(``stripe:purchase:<PaymentIntent>``: the same payment announced by two different
events is credited once). Nothing is marked processed unless the money moved with it:
the event row and the journal entry commit together or not at all.

Refunds and disputes carry only a PaymentIntent id; they take money back only from an
account that was credited for that PaymentIntent (anything else is not ours).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from tollhouse.credits import attempts, lots
from tollhouse.credits.journal import Kind, Movement, book, new_id
from tollhouse.credits.models import (
    credit_accounts,
    credit_lots,
    credit_transactions,
    stripe_events,
)
from tollhouse.credits.stripe_events import (
    Dispute,
    DisputeWon,
    Fact,
    PaymentFailed,
    Purchase,
    Refund,
    RefundFailed,
)
from tollhouse.db import insert_ignoring
from tollhouse.governance.service import bump_version

log = logging.getLogger("tollhouse.credits")

# Purchased credit is drawn after promotional credit (lower priority numbers go first).
PURCHASE_PRIORITY = 100
_t = credit_transactions.c


async def book_event(
    conn: AsyncConnection, event_id: str, event_type: str, fact: Fact | None
) -> bool | None:
    """Book ``fact`` of event ``event_id``; ``None`` for an event already received,
    else whether money moved."""
    now = datetime.now(UTC)
    inserted = await conn.execute(
        insert_ignoring(stripe_events, conn.dialect.name, "event_id").returning(
            stripe_events.c.event_id
        ),
        {"event_id": event_id, "type": event_type[:64], "received_at": now},
    )
    if inserted.first() is None:
        return None
    if isinstance(fact, Purchase | Refund | Dispute | RefundFailed | DisputeWon):
        # Before the account is locked, as every credits write does (grants, the
        # sweeper): two writers taking the same locks in opposite orders would deadlock.
        await bump_version(conn)
    seq: int | None = None
    if isinstance(fact, Purchase):
        seq = await _purchase(conn, fact, now)
    elif isinstance(fact, Refund | Dispute):
        kind: Kind = "refund" if isinstance(fact, Refund) else "dispute"
        seq = await _take_back(conn, fact, kind, -fact.amount, now)
    elif isinstance(fact, RefundFailed | DisputeWon):
        seq = await _take_back(conn, fact, "reversal", fact.amount, now)
    elif isinstance(fact, PaymentFailed):
        await _failed(conn, fact, now)
    if seq is None:
        return False
    await conn.execute(
        update(stripe_events)
        .where(stripe_events.c.event_id == event_id)
        .values(transaction_seq=seq)
    )
    return True


async def _purchase(conn: AsyncConnection, fact: Purchase, now: datetime) -> int | None:
    found = await conn.execute(
        select(credit_accounts.c.id).where(credit_accounts.c.id == fact.account_id)
    )
    if found.first() is None:
        log.warning(
            "stripe payment for an unknown credit account ignored",
            extra={"account_id": fact.account_id, "payment_intent": fact.payment_intent_id},
        )
        return None
    lot_id = new_id("lot")
    await lots.allocate(conn, fact.account_id)  # earlier spending: from the lots there were
    seq = await book(
        conn,
        Movement(
            account_id=fact.account_id,
            kind="purchase",
            amount=fact.amount,
            key=fact.key,
            lot_id=lot_id,
            payment_intent=fact.payment_intent_id,
            stripe_event=fact.event_id,  # None: booked from the charge's own answer
            created_at=now,
        ),
    )
    if seq is None:
        return None  # this payment was credited from another event
    await conn.execute(
        credit_lots.insert().values(
            id=lot_id,
            account_id=fact.account_id,
            source="purchase",
            amount=fact.amount,
            remaining=fact.amount,
            priority=PURCHASE_PRIORITY,
            effective_at=now,
            expires_at=None,
            status="active",
            idempotency_key=None,
            memo=f"Stripe {fact.source} {fact.payment_intent_id}",
            created_at=now,
        )
    )
    await lots.allocate(conn, fact.account_id)  # repay any overdraft from it
    if fact.topup_id is not None:
        await attempts.succeeded(conn, fact.topup_id, fact.payment_intent_id, now)
    return seq


async def book_charge(
    conn: AsyncConnection,
    topup_id: str,
    account_id: str,
    payment_intent_id: str,
    amount: Decimal,
) -> bool:
    """Book an auto top-up from Stripe's own answer that its charge succeeded, under the
    key its ``payment_intent.succeeded`` webhook books (``stripe:purchase:<pi>``): the
    credit does not wait for the webhook, and whichever comes second books nothing.
    Whether money moved."""
    now = datetime.now(UTC)
    fact = Purchase(
        event_id=None,
        payment_intent_id=payment_intent_id,
        amount=amount,
        account_id=account_id,
        topup_id=topup_id,
        source="payment_intent",
    )
    await bump_version(conn)  # first, as every credits write (see book_event)
    seq = await _purchase(conn, fact, now)
    if seq is None:
        # Booked from the webhook already (which ended the attempt), or ours to end now.
        await attempts.succeeded(conn, topup_id, payment_intent_id, now)
        return False
    return True


async def _take_back(
    conn: AsyncConnection, fact: Any, kind: Kind, amount: Any, now: datetime
) -> int | None:
    purchase = (
        await conn.execute(
            select(credit_transactions).where(
                _t.kind == "purchase", _t.payment_intent == fact.payment_intent_id
            )
        )
    ).one_or_none()
    if purchase is None:
        log.info(
            "stripe %s for a payment that credited nothing ignored",
            kind,
            extra={"payment_intent": fact.payment_intent_id},
        )
        return None
    await lots.allocate(conn, purchase.account_id)  # earlier spending first, as it came
    seq = await book(
        conn,
        Movement(
            account_id=purchase.account_id,
            kind=kind,
            amount=amount,
            key=fact.key,
            lot_id=purchase.lot_id,
            payment_intent=fact.payment_intent_id,
            stripe_event=fact.event_id,
            reverses=purchase.id,
            created_at=now,
        ),
    )
    if seq is not None:
        await lots.allocate(conn, purchase.account_id)
    return seq


async def _failed(conn: AsyncConnection, fact: PaymentFailed, now: datetime) -> None:
    if fact.topup_id is None:
        return
    await attempts.failed(conn, fact.topup_id, fact.decline_code or fact.code, fact.message, now)
