"""A credit ledger built through the real code paths, for reconciliation tests: accounts
and grants through the credits service, Stripe facts through ``payments.book_event``,
usage through the real ``UsageRecorder`` with the journal's posts as its companion (as
the app wires it), expiries and scheduled grants through ``service.run_due``."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from tollhouse.credits import payments, service
from tollhouse.credits.posting import UsagePosts
from tollhouse.credits.schemas import AccountCreate, GrantCreate
from tollhouse.credits.stripe_events import Purchase, Refund
from tollhouse.governance import service as governance
from tollhouse.governance.schemas import CustomerCreate
from tollhouse.ledger import UsageRecord, UsageRecorder
from tollhouse.ops.metrics import Metrics
from tollhouse.web.validation import parse


def usage_record(
    account_id: str | None, cost: Decimal, when: datetime, request_id: str | None = None
) -> UsageRecord:
    return UsageRecord(
        id=request_id or f"req_{uuid.uuid4().hex}",
        created_at=when,
        endpoint="chat",
        provider="openai",
        model="gpt-4o-mini",
        prompt_tokens=10,
        completion_tokens=5,
        cached_tokens=0,
        cost=cost,
        priced=True,
        latency_ms=12.5,
        status="success",
        http_status=200,
        streamed=False,
        credit_account_id=account_id,
    )


async def record_usage(engine: AsyncEngine, records: list[UsageRecord]) -> None:
    """Write ``records`` as the gateway does: the real recorder, posts in its batches."""
    recorder = UsageRecorder(engine, Metrics(), companion=UsagePosts())
    for record in records:
        recorder.add(record)
    await recorder.flush()


async def open_customer_account(conn: AsyncConnection, name: str, **more: Any) -> str:
    customer = await governance.create_customer(conn, parse(CustomerCreate, {"name": name}))
    body = parse(
        AccountCreate, {"owner_type": "customer", "owner_id": customer.customer.id, **more}
    )
    return str((await service.create_account(conn, body)).id)


async def grant(
    conn: AsyncConnection, account_id: str, amount: str, now: datetime, **more: Any
) -> Any:
    body = parse(GrantCreate, {"amount": Decimal(amount), **more})
    lot, _ = await service.grant(conn, account_id, body, None, now=now)
    return lot


async def waiting_on_a_lock(engine: AsyncEngine) -> bool:
    """Postgres: whether a session on this database waits for a lock (a writer the test
    made wait behind one it holds)."""
    async with engine.connect() as conn:
        query = text(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
        return bool((await conn.execute(query)).scalar_one())


@dataclass
class Books:
    """What ``busy_ledger`` booked: account ids, and request ids by account."""

    accounts: list[str]
    requests: dict[str, list[str]] = field(default_factory=dict)


async def busy_ledger(engine: AsyncEngine) -> Books:
    """Two accounts with every kind of movement: grants (one scheduled, one expired),
    a negative adjustment, a Stripe purchase and a partial refund, paid usage, a
    zero-cost record and a record paid by no account."""
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        a = await open_customer_account(conn, "acme", overdraft_limit=Decimal("1"))
        b = await open_customer_account(conn, "globex")
        await grant(conn, a, "10", now, expires_at=(now + timedelta(hours=1)).isoformat())
        await grant(conn, a, "2.5", now, priority=3, category="referral")
        await grant(conn, a, "4", now, effective_at=(now + timedelta(days=3)).isoformat())
        await grant(conn, a, "-0.75", now, category="adjustment", memo="goodwill undone")
        await grant(conn, b, "3", now)
        purchase = Purchase("evt_p1", "pi_books_1", Decimal("20"), a, None, "checkout")
        await payments.book_event(conn, "evt_p1", "checkout.session.completed", purchase)
    books = Books([a, b])
    records = [
        usage_record(a, Decimal("0.000123456"), now),
        usage_record(a, Decimal("1.5"), now),
        usage_record(a, Decimal("0"), now),
        usage_record(b, Decimal("0.25"), now),
        usage_record(None, Decimal("0.1"), now),
    ]
    await record_usage(engine, records)
    for record in records:
        if record.credit_account_id and record.cost:
            books.requests.setdefault(record.credit_account_id, []).append(record.id)
    async with engine.begin() as conn:
        refund = Refund("evt_r1", "pi_books_1", None, "re_books_1", Decimal("5"))
        await payments.book_event(conn, "evt_r1", "refund.created", refund)
        await service.run_due(conn, now + timedelta(hours=2))  # the 10 USD lot lapses
    # Usage after the last allocation: not yet drawn from the lots.
    late = usage_record(a, Decimal("0.4"), now + timedelta(hours=2))
    await record_usage(engine, [late])
    books.requests[a].append(late.id)
    return books
