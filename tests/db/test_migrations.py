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
    assert head() == "0007"


async def test_upgrade_downgrade_upgrade(db_engine):
    assert await current(db_engine) is None
    assert "usage_records" not in await tables(db_engine)

    await upgrade(db_engine)
    assert await current(db_engine) == head()
    assert {"usage_records", "alembic_version"} <= await tables(db_engine)
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
