"""Replies of the credits API, built from the service's rows."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from tollhouse.credits.schemas import (
    AccountRead,
    AutoTopupRead,
    BalanceRead,
    EntryRead,
    GrantRead,
    TopupRead,
)
from tollhouse.credits.service import balance_of


def account_read(row: Any, live: tuple[Decimal, Decimal] | None) -> AccountRead:
    balance = balance_of(row, live)
    return AccountRead(
        id=row.id,
        owner_type=row.owner_type,
        owner_id=row.owner_id,
        overdraft_limit=row.overdraft_limit,
        low_balance=row.low_balance,
        balance=BalanceRead(
            total=balance.total, reserved=balance.reserved, available=balance.available
        ),
        alert_state=row.alert_state,
        auto_topup=AutoTopupRead(
            enabled=row.auto_topup_enabled,
            threshold=row.auto_topup_threshold,
            amount=row.auto_topup_amount,
            monthly_cap=row.auto_topup_monthly_cap,
            consecutive_failures=row.auto_topup_failures,
            disabled_reason=row.auto_topup_disabled_reason,
            skipped_reason=row.auto_topup_skipped_reason,
            stripe_customer=row.stripe_customer,
            has_payment_method=row.stripe_payment_method is not None,
        ),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def grant_read(row: Any) -> GrantRead:
    return GrantRead(
        id=row.id,
        account_id=row.account_id,
        category=row.source,
        amount=row.amount,
        remaining=row.remaining,
        priority=row.priority,
        effective_at=row.effective_at,
        expires_at=row.expires_at,
        status=row.status,
        memo=row.memo,
        created_at=row.created_at,
    )


def entry_read(row: Any, balance_after: Decimal) -> EntryRead:
    return EntryRead(
        seq=row.seq,
        id=row.id,
        key=row.key,
        kind=row.kind,
        amount=row.amount,
        balance_after=balance_after,
        category=row.category,
        lot_id=row.lot_id,
        request_id=row.request_id,
        payment_intent=row.payment_intent,
        stripe_event=row.stripe_event,
        reverses=row.reverses,
        memo=row.memo,
        created_at=row.created_at,
    )


def topup_read(row: Any) -> TopupRead:
    return TopupRead(
        id=row.id,
        account_id=row.account_id,
        kind=row.kind,
        amount=row.amount,
        status=row.status,
        session_id=row.session_id,
        checkout_url=row.checkout_url,
        payment_intent=row.payment_intent,
        failure_code=row.failure_code,
        failure_message=row.failure_message,
        expires_at=row.expires_at,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )
