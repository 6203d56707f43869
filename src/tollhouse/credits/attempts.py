"""Top-up attempts ending, and an account's run of failed auto top-ups.

A ``credit_topups`` row is opened ``pending`` (``service.open_topup``) and ends once:
``succeeded`` in the transaction that books its purchase, ``failed`` only from
``pending`` (a decline answered by Stripe and the same decline arriving as a webhook
end it once, and count once). Both the charge's own answer (``autotopup``) and Stripe's
webhooks (``payments``) end attempts through here.

For auto top-ups the account keeps ``auto_topup_failures``, the failures in a row: a
success resets it, and the ``MAX_FAILURES``-th failure in a row turns auto top-up off
with the reason, in the same statement (so concurrent failures cannot both miss it).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import and_, case, update
from sqlalchemy.ext.asyncio import AsyncConnection

from tollhouse.credits.models import credit_accounts, credit_topups

MAX_FAILURES = 3
_a = credit_accounts.c
_t = credit_topups.c


async def succeeded(
    conn: AsyncConnection, topup_id: str, payment_intent: str, now: datetime
) -> str | None:
    """Mark the attempt paid; its kind (``None`` for an unknown id). An auto top-up that
    pays resets its account's run of failures."""
    result = await conn.execute(
        update(credit_topups)
        .where(_t.id == topup_id)
        .values(status="succeeded", payment_intent=payment_intent, updated_at=now)
        .returning(_t.kind, _t.account_id)
    )
    row = result.first()
    if row is None:
        return None
    if row.kind == "auto":
        await conn.execute(
            update(credit_accounts)
            .where(_a.id == row.account_id, _a.auto_topup_failures != 0)
            .values(auto_topup_failures=0)
        )
    return str(row.kind)


async def failed(
    conn: AsyncConnection,
    topup_id: str,
    code: str,
    message: str,
    now: datetime,
    payment_intent: str | None = None,
) -> bool:
    """End a pending attempt as failed; ``False`` when it had ended already. A failed auto
    top-up counts against its account (``auto_failed``)."""
    values: dict[str, object] = {
        "status": "failed",
        "failure_code": code[:64],
        "failure_message": message,
        "updated_at": now,
    }
    if payment_intent is not None:
        values["payment_intent"] = payment_intent
    result = await conn.execute(
        update(credit_topups)
        .where(_t.id == topup_id, _t.status == "pending")
        .values(**values)
        .returning(_t.kind, _t.account_id)
    )
    row = result.first()
    if row is None:
        return False
    if row.kind == "auto":
        await auto_failed(conn, row.account_id, message)
    return True


async def auto_failed(conn: AsyncConnection, account_id: str, message: str) -> int:
    """Count one more failed auto top-up on the account; at ``MAX_FAILURES`` in a row it
    is turned off, the reason naming the last failure. Returns the run's length."""
    failures = _a.auto_topup_failures + 1
    turns_off = and_(failures >= MAX_FAILURES, _a.auto_topup_enabled)
    reason = (
        f"auto top-up turned off after {MAX_FAILURES} failed attempts in a row; the last: "
        f"{message}. Fix the card, then enable auto top-up again"
    )
    result = await conn.execute(
        update(credit_accounts)
        .where(_a.id == account_id)
        .values(
            auto_topup_failures=failures,
            auto_topup_enabled=case((turns_off, False), else_=_a.auto_topup_enabled),
            auto_topup_disabled_reason=case(
                (turns_off, reason), else_=_a.auto_topup_disabled_reason
            ),
        )
        .returning(_a.auto_topup_failures)
    )
    found = result.scalar()
    return int(found or 0)
