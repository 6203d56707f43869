"""``/api/credits/*``: prepaid accounts, grants, the journal, top-ups; and
``GET /v1/credits`` for a key holder.

Same style as the governance API: 201 on create with the entity wrapped
(``{"account": {...}}``), lists with ``count``, merge updates, 400 naming the field,
404 for unknown ids, 409 for a write that contradicts what is stored. A write that
changes what admission may spend reloads this process's engine before answering.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from tollhouse.config import Settings
from tollhouse.credits import checkout as checkout_topup
from tollhouse.credits import service, statement
from tollhouse.credits.answers import account_read, entry_read, grant_read, topup_read
from tollhouse.credits.lots import open_lots
from tollhouse.credits.schemas import (
    AccountCreate,
    AccountList,
    AccountOne,
    AccountsQuery,
    AccountUpdate,
    AccountWritten,
    CheckoutCreate,
    CheckoutRead,
    GrantCreate,
    GrantList,
    GrantWritten,
    KeyCredits,
    KeyCreditsReply,
    LedgerPage,
    LedgerQuery,
    StripeEvent,
    StripeReceipt,
    TopupList,
)
from tollhouse.errors import NotFound, ServiceUnavailable, SignatureInvalid, ValidationFailed
from tollhouse.web.bodies import read_body
from tollhouse.web.responses import JSONResponse
from tollhouse.web.routing import Answer, Operation, Resource, client_address
from tollhouse.web.services import FailureCounter
from tollhouse.web.validation import read_model

IDEMPOTENCY_HEADER = "idempotency-key"
_MAX_IDEMPOTENCY_KEY = 255


class Admission(Protocol):
    """The admission engine, as these routes use it (``admission`` imports this package's
    tables, so not back)."""

    def authenticate(self, headers: Mapping[str, str]) -> Any: ...

    async def credit_usage(self, account_id: str) -> tuple[Decimal, Decimal] | None: ...

    async def reload(self) -> None: ...


class Watch(Protocol):
    """The balance watch (``watch.BalanceWatch``): accounts whose funding changed are
    checked for balance alerts and auto top-ups without waiting for its next scan."""

    def touched(self, account_ids: Iterable[str]) -> None: ...


class CreditServices(Protocol):
    """What these routes use of the running service (``web/services.py``)."""

    @property
    def settings(self) -> Settings: ...

    @property
    def engine(self) -> AsyncEngine: ...

    @property
    def admission(self) -> Admission: ...

    @property
    def auth_throttle(self) -> FailureCounter: ...

    @property
    def balance_watch(self) -> Watch: ...


def _state(request: Request) -> CreditServices:
    services: CreditServices = request.app.services
    return services


def _admission(request: Request) -> Admission:
    return _state(request).admission


async def _live(request: Request, account_id: str) -> tuple[Decimal, Decimal] | None:
    """Admission's live usage of the account (settled, held), when it has any."""
    return await _admission(request).credit_usage(account_id)


async def _changed(request: Request, account_id: str | None = None) -> None:
    """After a committed write: the running gateway applies it before we answer, and the
    account's balance alerts and auto top-up are looked at soon."""
    await _admission(request).reload()
    if account_id is not None:
        _state(request).balance_watch.touched([account_id])


async def _account_reply(request: Request, row: Any) -> Any:
    return account_read(row, await _live(request, row.id))


async def list_accounts(request: Request) -> Response:
    query = AccountsQuery.parse(request.query_params)
    async with _state(request).engine.connect() as conn:
        rows = await service.list_accounts(conn, query.owner_type, query.owner_id)
    items = [await _account_reply(request, row) for row in rows]
    return JSONResponse(AccountList(accounts=items, count=len(items)))


async def create_account(request: Request) -> Response:
    body = await read_model(request, AccountCreate)
    async with _state(request).engine.begin() as conn:
        row = await service.create_account(conn, body)
    await _changed(request)
    reply = AccountWritten(
        message="Credit account created successfully", account=await _account_reply(request, row)
    )
    return JSONResponse(reply, 201)


async def get_account(request: Request) -> Response:
    async with _state(request).engine.connect() as conn:
        row = await service.get_account(conn, request.path_params["id"])
    return JSONResponse(AccountOne(account=await _account_reply(request, row)))


async def update_account(request: Request) -> Response:
    body = await read_model(request, AccountUpdate)
    async with _state(request).engine.begin() as conn:
        row = await service.update_account(conn, request.path_params["id"], body)
    await _changed(request, row.id)
    reply = AccountWritten(
        message="Credit account updated successfully", account=await _account_reply(request, row)
    )
    return JSONResponse(reply)


def idempotency_key(request: Request) -> str | None:
    value = request.headers.get(IDEMPOTENCY_HEADER)
    if value is None:
        return None
    if not value.strip() or len(value) > _MAX_IDEMPOTENCY_KEY or not value.isprintable():
        raise ValidationFailed(
            f"Idempotency-Key must be 1 to {_MAX_IDEMPOTENCY_KEY} printable characters",
            param="Idempotency-Key",
        )
    return value


async def create_grant(request: Request) -> Response:
    key = idempotency_key(request)
    body = await read_model(request, GrantCreate)
    async with _state(request).engine.begin() as conn:
        lot, new = await service.grant(conn, request.path_params["id"], body, key)
    if new:
        await _changed(request, request.path_params["id"])
    message = "Grant created successfully" if new else "Grant already created with this key"
    return JSONResponse(GrantWritten(message=message, grant=grant_read(lot)), 201 if new else 200)


async def list_grants(request: Request) -> Response:
    async with _state(request).engine.connect() as conn:
        await service.get_account(conn, request.path_params["id"])
        rows = await open_lots(conn, request.path_params["id"])
    items = [grant_read(row) for row in rows]
    return JSONResponse(GrantList(grants=items, count=len(items)))


def _wants_csv(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    return "text/csv" in accept.lower()


async def ledger(request: Request) -> Response:
    query = LedgerQuery.parse(request.query_params)
    account_id = request.path_params["id"]
    engine = _state(request).engine
    if _wants_csv(request):
        async with engine.connect() as conn:
            await service.get_account(conn, account_id)
        name = f"credits-{account_id}.csv"
        return StreamingResponse(
            statement.csv_lines(engine, account_id, query.as_of),
            media_type="text/csv; charset=utf-8",
            headers={"content-disposition": f'attachment; filename="{name}"'},
        )
    async with engine.connect() as conn:
        await service.get_account(conn, account_id)
        rows, cursor = await statement.page(
            conn, account_id, query.limit, query.cursor, query.as_of
        )
    entries = [entry_read(row, balance) for row, balance in rows]
    return JSONResponse(LedgerPage(entries=entries, count=len(entries), next_cursor=cursor))


async def list_topups(request: Request) -> Response:
    async with _state(request).engine.connect() as conn:
        await service.get_account(conn, request.path_params["id"])
        rows = await service.topups(conn, request.path_params["id"])
    items = [topup_read(row) for row in rows]
    return JSONResponse(TopupList(topups=items, count=len(items)))


async def checkout(request: Request) -> Response:
    """A Stripe Checkout top-up: a pending top-up row, then the hosted session."""
    state = _state(request)
    if state.settings.stripe_secret_key is None:  # before the body is read, as always
        raise ServiceUnavailable(checkout_topup.NOT_CONFIGURED)
    body = await read_model(request, CheckoutCreate)
    reply = await checkout_topup.start(
        state.engine, state.settings, request.path_params["id"], body
    )
    return JSONResponse(reply, 201)


async def stripe_webhook(request: Request) -> Response:
    """A Stripe event, verified with ``stripe_webhook_secret``; each booked once."""
    state = _state(request)
    secret = state.settings.stripe_webhook_secret
    if secret is None:
        raise ServiceUnavailable("Stripe webhooks are off: set TOLLHOUSE_STRIPE_WEBHOOK_SECRET")
    from tollhouse.credits import payments, stripe_events  # the optional stripe extra

    client = client_address(request)
    state.auth_throttle.check(client)
    raw = await read_body(request)
    try:
        event = stripe_events.verify(raw, request.headers.get("stripe-signature"), secret)
    except SignatureInvalid:
        state.auth_throttle.failed(client)
        raise
    fact = stripe_events.fact_of(event)
    async with state.engine.begin() as conn:
        booked = await payments.book_event(conn, event.id, event.type, fact)
    if booked:
        await _changed(request, getattr(fact, "account_id", None))
    if booked is None:
        return JSONResponse(StripeReceipt(received=True, status="duplicate"))
    return JSONResponse(StripeReceipt(received=True, status="booked" if booked else "ignored"))


async def key_credits(request: Request) -> Response:
    """``GET /v1/credits``: the balance of the account that pays for the caller's key."""
    key = _admission(request).authenticate(request.headers)
    if key is None:
        raise NotFound("anonymous requests have no credit account")
    account_id = next((s.credit.account_id for s in key.chain if s.credit is not None), None)
    if account_id is None:
        raise NotFound(f"no credit account pays for virtual {key.scope.label}")
    async with _state(request).engine.connect() as conn:
        row = await service.get_account(conn, account_id)
    balance = service.balance_of(row, await _live(request, account_id))
    data = KeyCredits(
        total_credits=row.funded,
        total_usage=row.funded - balance.total,
        available=balance.available,
        reserved=balance.reserved,
    )
    return JSONResponse(KeyCreditsReply(data=data))


def _op(handler: Any, summary: str, answers: dict[int, Answer], **more: Any) -> Operation:
    return Operation(handler, summary, answers, tag="credits", **more)


_ACCOUNT = "Credit account"
# Mounted under ``/api`` behind the admin key.
routes = [
    Resource(
        "/credits/accounts",
        {
            "GET": _op(
                list_accounts,
                "List credit accounts, oldest first",
                {200: Answer(AccountList, "All of them (or those of the owner asked for)")},
                query=AccountsQuery,
            ),
            "POST": _op(
                create_account,
                "Create a prepaid account for a customer, team or virtual key",
                {201: Answer(AccountWritten, f"{_ACCOUNT} created successfully")},
                body=AccountCreate,
                errors=(409,),
            ),
        },
    ),
    Resource(
        "/credits/accounts/{id}",
        {
            "GET": _op(
                get_account,
                "Get a credit account with its balance (total, reserved, available)",
                {200: Answer(AccountOne, "Found")},
                errors=(404,),
            ),
            "PUT": _op(
                update_account,
                "Update a credit account (merge: fields left out are unchanged)",
                {200: Answer(AccountWritten, f"{_ACCOUNT} updated successfully")},
                body=AccountUpdate,
                errors=(404,),
            ),
        },
    ),
    Resource(
        "/credits/accounts/{id}/grants",
        {
            "GET": _op(
                list_grants,
                "Grants and purchases not used up yet, in the order usage draws them",
                {200: Answer(GrantList, "Open lots")},
                errors=(404,),
            ),
            "POST": _op(
                create_grant,
                "Grant credit (Idempotency-Key honoured: the same key answers the same grant)",
                {
                    201: Answer(GrantWritten, "Grant created successfully"),
                    200: Answer(GrantWritten, "Grant already created with this Idempotency-Key"),
                },
                body=GrantCreate,
                errors=(404, 409),
            ),
        },
    ),
    Resource(
        "/credits/accounts/{id}/ledger",
        {
            "GET": _op(
                ledger,
                "The account's journal, newest first (CSV, oldest first, with Accept: text/csv)",
                {200: Answer(LedgerPage, "One page; next_cursor for the next")},
                query=LedgerQuery,
                errors=(404,),
            )
        },
    ),
    Resource(
        "/credits/accounts/{id}/checkout",
        {
            "POST": _op(
                checkout,
                "Start a Stripe Checkout top-up; the account is credited when Stripe says "
                "it was paid",
                {201: Answer(CheckoutRead, "The hosted page to send the payer to")},
                body=CheckoutCreate,
                errors=(404, 502, 503),
            )
        },
    ),
    Resource(
        "/credits/accounts/{id}/topups",
        {
            "GET": _op(
                list_topups,
                "Top-up attempts (Checkout and automatic), newest first",
                {200: Answer(TopupList, "The latest 100")},
                errors=(404,),
            )
        },
    ),
]

# Signed by Stripe instead of the admin key: outside the admin mount, at its full path.
webhook_routes = [
    Resource(
        "/api/webhooks/stripe",
        {
            "POST": _op(
                stripe_webhook,
                "Receive a Stripe event (Stripe-Signature verified; each event and each "
                "payment booked once; unknown event types acknowledged)",
                {200: Answer(StripeReceipt, "Booked, ignored, or a duplicate")},
                body=StripeEvent,
                errors=(422, 503),
            )
        },
    )
]

# For key holders, beside the other /v1 routes (OpenAI-shaped errors, no admin key).
key_routes = [Route("/v1/credits", key_credits, methods=["GET"])]
