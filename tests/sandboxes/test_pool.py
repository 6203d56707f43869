"""``pool.allocate`` itself, on SQLite and on Postgres (where it is one statement sent
on asyncpg): a new lease, the same one for the same track, another track's idempotency
key refused, the answer read like any row (attributes and ``_mapping``, aware times),
and ``PoolExhausted`` once nothing is free."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from tollhouse.db.schema import upgrade
from tollhouse.errors import Conflict, NotFound, NotOwner, PoolExhausted
from tollhouse.sandboxes.models import sandboxes
from tollhouse.sandboxes.pool import (
    _HELD_OR_LEASED_PG,
    Ask,
    allocate,
    end_lease,
    new_sandbox_id,
    read,
)

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


async def test_a_track_reads_and_ends_its_own_lease_only(engine):
    """``read`` and ``end_lease``, a track's calls (one statement each on Postgres)."""
    ids = await two_static_sandboxes(engine)
    now = datetime.now(UTC)
    leased = await allocate(engine, Ask("track-a", LAB), GRACE, now, 30)
    assert (await read(engine, leased.row.id)).track_id == "track-a"
    with pytest.raises(NotFound):
        await read(engine, "sbx_nothing")
    with pytest.raises(NotFound):
        await end_lease(engine, "sbx_nothing", "track-a", now)
    with pytest.raises(NotOwner):  # another track's lease
        await end_lease(engine, leased.row.id, "track-b", now)
    with pytest.raises(NotOwner):  # a free sandbox is nobody's
        await end_lease(engine, ids[1], "track-a", now)
    assert (await read(engine, ids[1])).status == "available"

    later = now + timedelta(seconds=5)
    marked = await end_lease(engine, leased.row.id, "track-a", later)
    assert marked.status == "pending_deletion" and marked.updated_at == later
    assert marked.track_id == "track-a" and marked._mapping["id"] == leased.row.id
    again = await end_lease(engine, leased.row.id, "track-a", later + timedelta(seconds=5))
    assert again.status == "pending_deletion" and again.updated_at == later  # the same
    async with engine.begin() as conn:  # the reaper claims it
        await conn.execute(
            sandboxes.update().where(sandboxes.c.id == leased.row.id).values(status="deleting")
        )
    with pytest.raises(NotOwner):
        await end_lease(engine, leased.row.id, "track-a", later)


def _nodes(plan: dict) -> list[dict]:
    """Every node of an EXPLAIN (FORMAT JSON) plan."""
    return [plan, *(node for child in plan.get("Plans", ()) for node in _nodes(child))]


async def test_the_lease_plan_for_any_parameters_reads_no_other_lease(pg_engine):
    """asyncpg prepares the lease statement once per connection, and after five runs
    Postgres may plan it once for any parameters (a generic plan). Even then, the track's
    lease (and, for a key, another track's lease holding it) is looked up by value through
    an index, not found by reading every live lease, which made allocation slower as the
    pool filled (docs/benchmarks.md, *Sandboxes*)."""
    await upgrade(pg_engine)
    now = datetime.now(UTC)
    async with pg_engine.begin() as conn:
        await conn.execute(
            sandboxes.insert(),
            [
                {"id": new_sandbox_id(), "name": f"s-{n}", "backend": "static",
                 "status": "available", "created_at": now + timedelta(seconds=n),
                 "updated_at": now}
                for n in range(60)
            ],
        )  # fmt: skip
    for n in range(40):  # 40 live leases, 10 of them with a key
        key = f"k{n}" if n % 4 == 0 else None
        await allocate(pg_engine, Ask(f"t{n}", LAB, idempotency_key=key), GRACE, now, 30)
    types = "varchar, varchar, varchar, varchar, varchar, timestamptz, timestamptz"
    asks = ("'t-new', NULL", "'t-new', 'k-new'", "'t1', 'k0'", "'t0', 'k0'")
    async with pg_engine.connect() as conn:
        driver = (await conn.get_raw_connection()).driver_connection
        await driver.execute(f"PREPARE lease({types}) AS {_HELD_OR_LEASED_PG}")
        for track_and_key in asks:
            track, key = track_and_key.split(", ")
            explain = (
                f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE lease({track}, 'lab', NULL, {key}, "
                "NULL, now(), now() + interval '2 hours')"
            )
            rolled_back = driver.transaction()  # the EXPLAIN leases: undone
            await rolled_back.start()
            try:
                await driver.execute("SET LOCAL plan_cache_mode = force_generic_plan")
                explained = await driver.fetchval(explain)  # SQLAlchemy's codec decodes JSON
                plan = (json.loads(explained) if isinstance(explained, str) else explained)[0]
            finally:
                await rolled_back.rollback()
            plan = plan["Plan"]
            found = [node for node in _nodes(plan) if node.get("Index Name") in _LIVE]
            assert {node["Index Name"] for node in found} == set(_LIVE), track_and_key
            for node in found:  # looked up by value: at most the one lease read
                assert "Index Cond" in node, (track_and_key, node)
                assert node["Actual Rows"] + node.get("Rows Removed by Filter", 0) <= 1
        await driver.execute("DEALLOCATE lease")


_LIVE = ("ux_sandboxes_live_track", "ix_sandboxes_live_key")
