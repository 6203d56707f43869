"""``pool.allocate`` itself, on SQLite and on Postgres (where it is one statement sent
on asyncpg): a new lease, the same one for the same track, another track's idempotency
key refused, the answer read like any row (attributes and ``_mapping``, aware times),
and ``PoolExhausted`` once nothing is free."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tollhouse.db.schema import upgrade
from tollhouse.errors import Conflict, PoolExhausted
from tollhouse.sandboxes.models import sandboxes
from tollhouse.sandboxes.pool import Ask, allocate, new_sandbox_id

LAB, GRACE = timedelta(hours=2), timedelta(minutes=15)


async def two_static_sandboxes(engine) -> list[str]:
    await upgrade(engine)
    now = datetime.now(UTC)
    ids = [new_sandbox_id() for _ in range(2)]
    async with engine.begin() as conn:
        for n, sandbox_id in enumerate(ids):
            await conn.execute(
                sandboxes.insert().values(
                    id=sandbox_id,
                    name=f"static-{n}",
                    backend="static",
                    status="available",
                    created_at=now + timedelta(seconds=n),
                    updated_at=now,
                )
            )
    return ids


async def test_a_lease_its_repeat_and_a_stolen_key(engine):
    ids = await two_static_sandboxes(engine)
    now = datetime.now(UTC)
    first = await allocate(engine, Ask("track-a", LAB, idempotency_key="k1"), GRACE, now, 30)
    assert first.created is True and first.row.id == ids[0]  # the oldest free one
    assert first.row._mapping["track_id"] == "track-a" and first.row.status == "allocated"
    assert first.row.expires_at == now + LAB + GRACE and first.row.expires_at.tzinfo is not None

    again = await allocate(engine, Ask("track-a", LAB), GRACE, now, 30)
    assert again.created is False and again.row.id == first.row.id

    with pytest.raises(Conflict):  # another track's key is not this track's lease
        await allocate(engine, Ask("track-b", LAB, idempotency_key="k1"), GRACE, now, 30)

    other = await allocate(engine, Ask("track-b", LAB), GRACE, now, 30)
    assert other.created is True and other.row.id == ids[1]
    with pytest.raises(PoolExhausted) as exhausted:
        await allocate(engine, Ask("track-c", LAB), GRACE, now, 30)
    assert exhausted.value.headers["retry-after"] == "30"
    with pytest.raises(AttributeError):
        _ = first.row.no_such_column
