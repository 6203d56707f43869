"""Migrations up, down to base and up again, on SQLite and Postgres."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from tollhouse.db import metadata
from tollhouse.db.schema import current, downgrade, head, import_all_models, upgrade

EXPECTED_INDEXES = {
    "ix_usage_records_created_at_id",
    "ix_usage_records_key_id_created_at",
    "ix_usage_records_team_id_created_at",
    "ix_usage_records_customer_id_created_at",
    "ix_usage_records_model_created_at",
    "ix_usage_records_credit_account_id_created_at",
    "ix_usage_records_credit_post",
    "ix_usage_records_session_id",
}


async def tables(engine) -> set[str]:
    async with engine.connect() as conn:
        return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))


async def indexes(engine, table: str) -> set[str]:
    async with engine.connect() as conn:
        found = await conn.run_sync(lambda c: inspect(c).get_indexes(table))
    return {index["name"] for index in found}


async def columns(engine, table: str) -> set[str]:
    async with engine.connect() as conn:
        found = await conn.run_sync(lambda c: inspect(c).get_columns(table))
    return {column["name"] for column in found}


def test_head_is_the_newest_revision():
    assert head() == "0015"


async def test_upgrade_downgrade_upgrade(db_engine):
    assert await current(db_engine) is None
    assert "usage_records" not in await tables(db_engine)

    await upgrade(db_engine)
    assert await current(db_engine) == head()
    assert {"usage_records", "usage_hourly", "usage_daily", "alembic_version"} <= await tables(
        db_engine
    )
    assert await indexes(db_engine, "usage_records") == EXPECTED_INDEXES

    await downgrade(db_engine, "base")
    assert await current(db_engine) is None
    assert "usage_records" not in await tables(db_engine)

    await upgrade(db_engine)
    assert await current(db_engine) == head()
    assert "usage_records" in await tables(db_engine)


async def test_upgrade_is_idempotent(db_engine):
    await upgrade(db_engine)
    await upgrade(db_engine)
    assert await current(db_engine) == head()


async def test_downgrade_one_step(db_engine):
    await upgrade(db_engine)
    await downgrade(db_engine, "-1")
    assert await current(db_engine) == "0014"
    assert {"usage_hourly", "usage_daily"}.isdisjoint(await tables(db_engine))
    await downgrade(db_engine, "-1")
    assert await current(db_engine) == "0013"
    assert "ix_sandboxes_live_key" not in await indexes(db_engine, "sandboxes")
    await downgrade(db_engine, "-1")
    assert await current(db_engine) == "0012"
    assert {"session_id", "persona_id"}.isdisjoint(await columns(db_engine, "usage_records"))
    assert "ix_usage_records_session_id" not in await indexes(db_engine, "usage_records")
    await downgrade(db_engine, "-1")
    assert await current(db_engine) == "0011"
    assert "published_at" not in await columns(db_engine, "session_events")
    assert "ix_session_events_unpublished" not in await indexes(db_engine, "session_events")
    await downgrade(db_engine, "-1")
    assert await current(db_engine) == "0010"
    assert {"agent_sessions", "session_events"}.isdisjoint(await tables(db_engine))
    await downgrade(db_engine, "-1")
    assert await current(db_engine) == "0009"
    assert {"sandboxes", "broker_tokens"}.isdisjoint(await tables(db_engine))
    await downgrade(db_engine, "-1")
    assert await current(db_engine) == "0008"
    assert "policies" not in await tables(db_engine)
    assert "tags" not in await columns(db_engine, "virtual_keys")
    await downgrade(db_engine, "-1")
    assert await current(db_engine) == "0007"
    assert "credit_post" not in await columns(db_engine, "usage_records")
    await downgrade(db_engine, "-1")
    assert await current(db_engine) == "0006"
    assert "ux_credit_topups_pending_auto" not in await indexes(db_engine, "credit_topups")
    assert "alert_crossings" not in await columns(db_engine, "credit_accounts")
    await downgrade(db_engine, "-1")
    assert await current(db_engine) == "0005"
    assert "credit_accounts" not in await tables(db_engine)
    assert "credit_account_id" not in {c for c in await columns(db_engine, "usage_records")}
    await downgrade(db_engine, "-1")
    assert await current(db_engine) == "0004"
    assert "alert_events" in await tables(db_engine)
    await downgrade(db_engine, "-1")
    assert await current(db_engine) == "0003"
    assert "alert_events" not in await tables(db_engine)
    await downgrade(db_engine, "-1")
    assert await current(db_engine) == "0002"
    assert "virtual_keys" in await tables(db_engine)
    await downgrade(db_engine, "-1")
    assert await current(db_engine) == "0001"
    assert "virtual_keys" not in await tables(db_engine)
    assert "usage_records" in await tables(db_engine)
    await downgrade(db_engine, "-1")
    assert await current(db_engine) is None
    assert "usage_records" not in await tables(db_engine)


async def test_migrations_match_the_models(db_engine):
    # What the migrations build is what the code's tables describe: no autogenerate diff.
    import_all_models()
    await upgrade(db_engine)

    def diff(conn):
        return compare_metadata(MigrationContext.configure(conn), metadata)

    async with db_engine.connect() as conn:
        changes = await conn.run_sync(diff)
    assert changes == []


async def test_posts_booked_per_request_before_0008_are_linked_to_their_records(db_engine):
    from datetime import UTC, datetime
    from decimal import Decimal

    from sqlalchemy import insert, select
    from tests.credits.books import usage_record

    from tollhouse.credits import service
    from tollhouse.credits.journal import Movement, book
    from tollhouse.credits.schemas import AccountCreate
    from tollhouse.credits.verify import verify_engine
    from tollhouse.governance.models import customers
    from tollhouse.ledger.models import usage_records
    from tollhouse.web.validation import parse

    await upgrade(db_engine, "0007")
    async with db_engine.begin() as conn:
        now = datetime.now(UTC)
        row = {"id": "cust_acme", "name": "acme", "created_at": now, "updated_at": now}
        await conn.execute(insert(customers).values(**row))
        body = parse(AccountCreate, {"owner_type": "customer", "owner_id": "cust_acme"})
        account = str((await service.create_account(conn, body)).id)
        posted, unposted = (
            usage_record(account, Decimal("0.25"), datetime.now(UTC)) for _ in range(2)
        )
        later = {"credit_post", "session_id", "persona_id"}  # columns 0007 did not have
        rows = [{k: v for k, v in r.row().items() if k not in later} for r in (posted, unposted)]
        await conn.execute(insert(usage_records), rows)
        key = f"post:{posted.id}"
        await book(conn, Movement(account, "post", Decimal("-0.25"), key, request_id=posted.id))
    await upgrade(db_engine)
    async with db_engine.connect() as conn:
        linked = dict(
            (await conn.execute(select(usage_records.c.id, usage_records.c.credit_post))).all()
        )
    assert linked == {posted.id: key, unposted.id: None}
    report = await verify_engine(db_engine)
    [posts] = [d for d in report.differences if d.check == "posts"]
    assert posts.detail == f"missing: {unposted.id}"  # linked, the other still named


async def test_session_events_logged_before_0012_count_as_published(db_engine):
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import insert, select

    from tollhouse.agents.models import agent_sessions, session_events
    from tollhouse.agents.outbox import Redrive
    from tollhouse.bus.memory import MemoryBus

    await upgrade(db_engine, "0011")
    now = datetime.now(UTC)
    session = {"id": "ses_before0012", "tenant_kind": "key", "tenant_id": "vk_1"}
    async with db_engine.begin() as conn:
        await conn.execute(
            insert(agent_sessions).values(
                **session, status="idle", last_seq=2, created_at=now, updated_at=now
            )
        )
        for seq, kind in ((1, "conversation_event"), (2, "assistant_event")):
            event = {"event_id": f"evt_before{seq:04d}", "session_id": session["id"]}
            await conn.execute(
                insert(session_events).values(
                    event_id=event["event_id"],
                    session_id=session["id"],
                    seq=seq,
                    kind=kind,
                    type="message",
                    body=event,
                    created_at=now,
                )
            )
    await upgrade(db_engine)
    async with db_engine.connect() as conn:
        stamped = dict(
            (await conn.execute(select(session_events.c.kind, session_events.c.published_at))).all()
        )
    assert stamped == {"conversation_event": now, "assistant_event": None}
    # An upgrade does not send a session's history to the workers again.
    later = now + timedelta(minutes=1)  # past the redrive's grace
    assert await Redrive(db_engine, MemoryBus(), interval_s=5).run_once(later) == 0


async def test_usage_recorded_before_0015_is_rolled_up_as_the_recorder_would(db_engine):
    from sqlalchemy import delete, insert, text
    from tests.ledger.sums import assert_rolled_up, stored
    from tests.ledger.test_rollups import record, varied

    from tollhouse.db.snapshot import read_snapshot
    from tollhouse.ledger.models import usage_daily, usage_hourly, usage_records
    from tollhouse.ledger.rollups import roll_up
    from tollhouse.ledger.verify import verify_rollups

    await upgrade(db_engine, "0014")
    before = varied(40)
    async with db_engine.begin() as conn:
        await conn.execute(insert(usage_records), [r.row() for r in before])
    await upgrade(db_engine)
    await assert_rolled_up(db_engine)
    async with read_snapshot(db_engine) as conn:
        assert (await verify_rollups(conn)).ok
        back_filled = {grain: await stored(conn, grain) for grain in ("hour", "day")}

    # What roll_up writes for the same records, row for row.
    async with db_engine.begin() as conn:
        for table in (usage_hourly, usage_daily):
            await conn.execute(delete(table))
        await roll_up(conn, [r.row() for r in before])
    async with db_engine.connect() as conn:
        assert {grain: await stored(conn, grain) for grain in ("hour", "day")} == back_filled

    # And in the same key: later records of those hours add to the back-filled rows
    # (on SQLite the key is text: the back-fill must write the recorder's very form).
    await downgrade(db_engine, "0014")
    async with db_engine.begin() as conn:
        await conn.execute(insert(usage_records), [r.row() for r in varied(40, "more")])
    await upgrade(db_engine)
    await record(db_engine, varied(40, "later"))
    assert await assert_rolled_up(db_engine) == 120
    if db_engine.dialect.name == "sqlite":
        async with db_engine.connect() as conn:
            forms = await conn.execute(text("SELECT DISTINCT length(bucket) FROM usage_hourly"))
            assert forms.scalars().all() == [len("2026-11-21 22:00:00.000000")]
