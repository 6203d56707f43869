"""A Stripe Checkout top-up started: a pending top-up row, then Stripe's hosted page —
what ``POST /api/credits/accounts/{id}/checkout`` and the dashboard's top-up link both
do. The account is credited later, when Stripe says it was paid (``payments``)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from tollhouse.config import Settings
from tollhouse.credits import service
from tollhouse.credits.schemas import CheckoutCreate, CheckoutRead
from tollhouse.errors import ServiceUnavailable

LIFETIME = timedelta(hours=1)
NOT_CONFIGURED = "Stripe is not configured: set TOLLHOUSE_STRIPE_SECRET_KEY"


def unavailable(settings: Settings) -> str | None:
    """Why a Checkout top-up cannot start here (``None``: it can), for a page to say
    before anyone presses a button that would fail."""
    if settings.stripe_secret_key is None:
        return NOT_CONFIGURED
    if settings.stripe_success_url is None:
        return "Stripe Checkout needs TOLLHOUSE_STRIPE_SUCCESS_URL, the page payers return to"
    return None


async def start(
    engine: AsyncEngine, settings: Settings, account_id: str, body: CheckoutCreate
) -> CheckoutRead:
    """Open a pending top-up of ``body.amount`` and its Checkout session (valid for
    ``LIFETIME``). 503 without Stripe, 400 for an amount Stripe cannot charge (before
    anything is written), 404 for an unknown account."""
    if settings.stripe_secret_key is None:
        raise ServiceUnavailable(NOT_CONFIGURED)
    from tollhouse.credits.stripe import Payments, to_cents  # the optional stripe extra

    to_cents(body.amount)  # whole cents, within Stripe's bounds: a 400 before any write
    async with engine.begin() as conn:
        account = await service.get_account(conn, account_id)
        topup = await service.open_topup(conn, account.id, "checkout", body.amount)
    async with Payments(settings) as payments:
        session = await payments.create_checkout(
            topup.id,
            body.amount,
            account_id=account.id,
            customer=account.stripe_customer,
            expires_at=topup.created_at + LIFETIME,
        )
    async with engine.begin() as conn:
        await service.checkout_opened(conn, topup.id, session)
    return CheckoutRead(
        topup_id=topup.id,
        checkout_url=session.url or "",
        session_id=session.session_id,
        expires_at=session.expires_at,
    )
