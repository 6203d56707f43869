"""Usage posts, on SQLite and Postgres, through the real usage recorder: one post per
account per batch keyed by its first paid record, every paid record naming its post,
and a batch written again (a spool replay after a commit whose answer was lost) posting
only the records it did not write before — under the key of the first of those."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine
from tests.credits.books import open_customer_account, record_usage, usage_record

from tollhouse.credits.models import credit_transactions
from tollhouse.credits.verify import verify_engine
from tollhouse.ledger.models import usage_records

_t = credit_transactions.c
_u = usage_records.c


async def posts(engine: AsyncEngine) -> dict[str, tuple[str, Decimal, str | None]]:
    """Every post: key → (account, amount, memo)."""
    query = select(_t.key, _t.account_id, _t.amount, _t.memo).where(_t.kind == "post")
    async with engine.connect() as conn:
        return {
            key: (account, amount, memo) for key, account, amount, memo in await conn.execute(query)
        }


async def named(engine: AsyncEngine) -> dict[str, str | None]:
    """Every usage record's post: request id → key."""
    async with engine.connect() as conn:
        return dict((await conn.execute(select(_u.id, _u.credit_post))).all())


async def two_accounts(engine: AsyncEngine) -> tuple[str, str]:
    async with engine.begin() as conn:
        return await open_customer_account(conn, "acme"), await open_customer_account(
            conn, "globex"
        )


async def test_one_post_per_account_and_batch_and_each_record_names_it(engine):
    a, b = await two_accounts(engine)
    now = datetime.now(UTC)
    a1, a2, b1 = (usage_record(x, Decimal(c), now) for x, c in ((a, "0.5"), (a, "0.25"), (b, "1")))
    free = usage_record(a, Decimal(0), now)  # the account's, but it cost nothing
    unpaid = usage_record(None, Decimal("0.1"), now)  # no prepaid account paid
    await record_usage(engine, [a1, free, b1, a2, unpaid])

    assert await posts(engine) == {
        f"post:{a1.id}": (a, Decimal("-0.75"), "usage: 2 requests"),
        f"post:{b1.id}": (b, Decimal("-1"), "usage: 1 request"),
    }
    assert await named(engine) == {
        a1.id: f"post:{a1.id}",
        a2.id: f"post:{a1.id}",
        b1.id: f"post:{b1.id}",
        free.id: None,
        unpaid.id: None,
    }
    assert (await verify_engine(engine)).ok


async def test_a_batch_written_again_posts_only_what_it_had_not_written(engine):
    a, _ = await two_accounts(engine)
    now = datetime.now(UTC)
    first, second, later = (usage_record(a, Decimal(c), now) for c in ("0.5", "0.25", "2"))
    await record_usage(engine, [first, second])
    await record_usage(engine, [first, second])  # written already: nothing more
    assert await posts(engine) == {f"post:{first.id}": (a, Decimal("-0.75"), "usage: 2 requests")}

    # Replayed with a record the first write did not have: the key the batch gives its
    # records names one written before, so the new record is posted under its own.
    await record_usage(engine, [first, second, later])
    assert await posts(engine) == {
        f"post:{first.id}": (a, Decimal("-0.75"), "usage: 2 requests"),
        f"post:{later.id}": (a, Decimal("-2"), "usage: 1 request"),
    }
    assert (await named(engine))[later.id] == f"post:{later.id}"
    report = await verify_engine(engine)
    assert report.ok and report.posts == 2
