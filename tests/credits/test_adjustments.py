"""A negative adjustment under an ``Idempotency-Key`` is booked once, like a grant: the
same adjustment again answers the first (200, the same id: its journal movement's), a
different one under the key is a 409 — and so is a grant under a key an adjustment used,
or the other way round."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

from tests.credits.books import open_customer_account, waiting_on_a_lock
from tests.credits.helpers import balance, call, entries, grant, open_account
from tests.governance.helpers import create_customer
from tests.support import wait_until

from tollhouse.credits import service
from tollhouse.credits.schemas import GrantCreate
from tollhouse.credits.verify import verify
from tollhouse.web.validation import parse


async def test_a_negative_adjustment_is_idempotent_under_its_key(gateway):
    customer = await create_customer(gateway)
    account_id = (await open_account(gateway, "customer", customer["id"]))["id"]
    await grant(gateway, account_id, "5")
    undo = {"category": "adjustment", "memo": "goodwill undone"}

    taken = await grant(gateway, account_id, "-2", key="undo-1", **undo)
    again = await grant(gateway, account_id, "-2", key="undo-1", status=200, **undo)
    assert again == taken
    assert taken["status"] == "booked" and taken["amount"] == Decimal("-2")
    [movement] = [e for e in await entries(gateway, account_id) if e["amount"] < 0]
    assert movement["id"] == taken["id"]
    assert (await balance(gateway, account_id))["total"] == 3

    async def refused(amount: str, key: str, **more: str) -> None:
        body = {"amount": Decimal(amount), **more}
        path = f"/accounts/{account_id}/grants"
        answer = await call(gateway, "POST", path, body, 409, headers={"Idempotency-Key": key})
        assert "different grant" in answer["error"]

    await refused("-3", "undo-1", **undo)
    await refused("2", "undo-1")
    await grant(gateway, account_id, "1", key="gift-1")
    await refused("-1", "gift-1", **undo)
    assert (await balance(gateway, account_id))["total"] == 4


async def test_the_same_adjustment_sent_twice_at_once_is_booked_once(pg_engine):
    """The second waits for the first, finds the key taken, and answers the first."""
    engine = pg_engine
    async with engine.begin() as conn:
        account = await open_customer_account(conn, "acme")
    body = parse(GrantCreate, {"amount": Decimal("-1"), "category": "adjustment"})

    async def second() -> tuple[Any, bool]:
        async with engine.begin() as conn:
            return await service.grant(conn, account, body, "undo-1")

    async with engine.connect() as conn:
        await conn.begin()
        first, new = await service.grant(conn, account, body, "undo-1")
        assert new
        answering = asyncio.create_task(second())
        await wait_until(lambda: waiting_on_a_lock(engine), what="the second waiting")
        await conn.commit()
    again, new = await answering
    assert (again.id, new) == (first.id, False)
    async with engine.connect() as conn:
        assert (await service.get_account(conn, account)).funded == Decimal("-1")
        assert (await verify(conn)).ok
