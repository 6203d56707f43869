"""Prepaid credits: every account with its balance, and an account's page — its journal
(cursor-paged, newest first), a grant form, the Stripe Checkout top-up link and the
account's settings (overdraft, low-balance mark, auto top-up) — through
``credits.service``, ``credits.statement`` and ``credits.checkout`` with the admin API's
bodies, so money is read exactly as ``/api/credits`` reads it and refused alike.

Balances are the API's: the journal's projections, or admission's live figure when
this process has one (``service.balance_of``), so the page agrees with
``GET /api/credits/accounts/{id}``.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from tollhouse.credits import checkout, service, statement
from tollhouse.credits.answers import account_read, entry_read, topup_read
from tollhouse.credits.routes import CreditServices
from tollhouse.credits.schemas import (
    AccountRead,
    AccountUpdate,
    CheckoutCreate,
    CheckoutRead,
    GrantCreate,
    LedgerQuery,
)
from tollhouse.dashboard import forms
from tollhouse.dashboard.access import Visitor
from tollhouse.dashboard.pages import Names, form_text, names, page, query_without
from tollhouse.dashboard.render import html
from tollhouse.errors import TollhouseError, ValidationFailed
from tollhouse.money import format_usd
from tollhouse.web.validation import parse

JOURNAL_PAGE = 50
CATEGORIES = ("promotional", "referral", "adjustment")
OWNER_PAGES = {"customer": "/ui/customers", "team": "/ui/teams", "key": "/ui/keys"}


def _services(request: Request) -> CreditServices:
    found: CreditServices = request.app.services
    return found


@dataclass(frozen=True, slots=True)
class Shown:
    """An account as the pages show it: the API's answer, its owner's name and link,
    and what it was funded with and has spent (``total = funded − spent``)."""

    account: AccountRead
    owner: str
    owner_href: str
    funded: Decimal
    spent: Decimal


async def _shown(request: Request, row: Any, n: Names) -> Shown:
    live = await _services(request).admission.credit_usage(row.id)
    account = account_read(row, live)
    owner = f"{row.owner_type} {n.of(row.owner_type, row.owner_id)}"
    href = f"{OWNER_PAGES[row.owner_type]}/{row.owner_id}"
    return Shown(account, owner, href, row.funded, row.funded - account.balance.total)


async def _changed(request: Request, account_id: str) -> None:
    """As the API does after a funding write: this process applies it before the page
    answers, and the balance watch looks at the account's alerts and auto top-up."""
    await _services(request).admission.reload()
    _services(request).balance_watch.touched([account_id])


@page
async def account_list(request: Request, who: Visitor) -> Response:
    async with _services(request).engine.connect() as conn:
        rows = await service.list_accounts(conn)
    n = names(request)
    accounts = [await _shown(request, row, n) for row in rows]
    accounts.sort(key=lambda s: s.owner.lower())
    context = {"title": "Credits", "nav": "credits", "accounts": accounts}
    return html(request, "credits.html", context, who)


def _plain(value: Decimal | None) -> str:
    """An amount as typed back into a field: every digit, no exponent, blank for none."""
    return "" if value is None else format_usd(value)


def _settings_form(a: AccountRead) -> forms.Form:
    auto = a.auto_topup
    return {
        "overdraft_limit": _plain(a.overdraft_limit),
        "low_balance": _plain(a.low_balance),
        "auto_enabled": "on" if auto.enabled else "",
        "auto_threshold": _plain(auto.threshold),
        "auto_amount": _plain(auto.amount),
        "auto_monthly_cap": _plain(auto.monthly_cap),
        "stripe_customer": auto.stripe_customer or "",
    }


async def _account_page(
    request: Request, who: Visitor, *, form: forms.Form | None = None,
    failed: str | None = None, error: TollhouseError | None = None,
    opened: CheckoutRead | None = None,
) -> Response:  # fmt: skip
    """The account's page; ``failed`` names the form ``error`` belongs to (shown there,
    with what was typed kept)."""
    account_id = request.path_params["id"]
    journal_error: ValidationFailed | None = None
    async with _services(request).engine.connect() as conn:
        row = await service.get_account(conn, account_id)
        try:
            cursor = LedgerQuery.parse(request.query_params).cursor
            entries, next_cursor = await statement.page(conn, account_id, JOURNAL_PAGE,
                                                        cursor, None)  # fmt: skip
        except ValidationFailed as exc:
            journal_error, entries, next_cursor = exc, [], None
        topups = await service.topups(conn, account_id, limit=10)
    shown = await _shown(request, row, names(request))
    typed = form or {}
    context = {
        "title": f"Credits of {shown.owner}",
        "nav": "credits",
        "s": shown,
        "a": shown.account,
        "entries": [entry_read(r, balance) for r, balance in entries],
        "topups": [topup_read(r) for r in topups],
        "next_query": query_without(request, "cursor", cursor=next_cursor) if next_cursor else None,
        "journal_error": journal_error,
        "grant_form": typed if failed == "grant" else {"category": "promotional"},
        "settings_form": typed if failed == "settings" else _settings_form(shown.account),
        "checkout_form": typed if failed == "checkout" else {},
        "idempotency_key": secrets.token_urlsafe(18),
        "failed": failed,
        "error": error,
        "opened": opened,
        "stripe_missing": checkout.unavailable(_services(request).settings),
        "categories": CATEGORIES,
    }
    status = error.status_code if error else (400 if journal_error else 200)
    return html(request, "credit_account.html", context, who, status)


@page
async def account_detail(request: Request, who: Visitor) -> Response:
    return await _account_page(request, who)


def _grant_key(form: forms.Form) -> str | None:
    """The form's one-time key: a grant posted twice (a double click, a resent form)
    is booked once, as ``Idempotency-Key`` does for the API."""
    key = forms.text(form, "idempotency_key")
    if key is not None and (len(key) > 64 or not key.replace("-", "").replace("_", "").isalnum()):
        raise ValidationFailed("the form's idempotency key is not one this page gave",
                               param="idempotency_key")  # fmt: skip
    return key


@page
async def account_grant(request: Request, who: Visitor) -> Response:
    account_id = request.path_params["id"]
    form = await form_text(request)
    try:
        body = parse(GrantCreate, {
            "amount": forms.amount(form, "amount", "amount"),
            "category": forms.text(form, "category") or "promotional",
            "expires_at": forms.text(form, "expires_at"),
            "memo": forms.text(form, "memo"),
        })  # fmt: skip
        async with _services(request).engine.begin() as conn:
            _, new = await service.grant(conn, account_id, body, _grant_key(form))
    except TollhouseError as exc:
        return await _account_page(request, who, form=form, failed="grant", error=exc)
    if new:
        await _changed(request, account_id)
    return RedirectResponse(f"/ui/credits/{account_id}?granted=1", 303)


@page
async def account_checkout(request: Request, who: Visitor) -> Response:
    """A Checkout top-up, as the API starts one; the page shows the link to pay (sent to
    the payer, or opened here) — never a redirect, so nothing is paid by accident."""
    services = _services(request)
    form = await form_text(request)
    try:
        body = parse(CheckoutCreate, {"amount": forms.amount(form, "amount", "amount")})
        opened = await checkout.start(services.engine, services.settings,
                                      request.path_params["id"], body)  # fmt: skip
    except TollhouseError as exc:
        return await _account_page(request, who, form=form, failed="checkout", error=exc)
    return await _account_page(request, who, opened=opened)


def _settings_body(form: forms.Form) -> dict[str, Any]:
    """``AccountUpdate`` from the settings form: every field as shown (a blank mark
    or amount clears it); the Stripe ids only when typed (they are not shown in full)."""
    auto: dict[str, Any] = {
        "enabled": forms.checked(form, "auto_enabled"),
        "threshold": forms.amount(form, "auto_threshold", "auto_topup.threshold"),
        "amount": forms.amount(form, "auto_amount", "auto_topup.amount"),
        "monthly_cap": forms.amount(form, "auto_monthly_cap", "auto_topup.monthly_cap"),
    }
    for name in ("stripe_customer", "stripe_payment_method"):
        if (value := forms.text(form, name)) is not None:
            auto[name] = value
    overdraft = forms.amount(form, "overdraft_limit", "overdraft_limit")
    return {
        "overdraft_limit": Decimal(0) if overdraft is None else overdraft,
        "low_balance": forms.amount(form, "low_balance", "low_balance"),
        "auto_topup": auto,
    }


@page
async def account_settings(request: Request, who: Visitor) -> Response:
    account_id = request.path_params["id"]
    form = await form_text(request)
    try:
        body = parse(AccountUpdate, _settings_body(form))
        async with _services(request).engine.begin() as conn:
            await service.update_account(conn, account_id, body)
    except TollhouseError as exc:
        return await _account_page(request, who, form=form, failed="settings", error=exc)
    await _changed(request, account_id)
    return RedirectResponse(f"/ui/credits/{account_id}?saved=1", 303)


def routes() -> list[Route]:
    return [
        Route("/ui/credits", account_list, methods=["GET"]),
        Route("/ui/credits/{id}", account_detail, methods=["GET"]),
        Route("/ui/credits/{id}/grant", account_grant, methods=["POST"]),
        Route("/ui/credits/{id}/checkout", account_checkout, methods=["POST"]),
        Route("/ui/credits/{id}/settings", account_settings, methods=["POST"]),
    ]
