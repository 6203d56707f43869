"""The service and schema layers without HTTP: transactions, the change version,
concurrent writers on SQLite, and JSON from live counters."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import orjson
import pytest
from sqlalchemy import delete, select, text
from tests.support import running

from tollhouse.errors import InvalidJSON, NotFound, ValidationFailed
from tollhouse.governance import service
from tollhouse.governance.answers import customer_read, key_read
from tollhouse.governance.models import budgets, governance_state, rate_limits
from tollhouse.governance.schemas import (
    CustomerCreate,
    CustomerUpdate,
    TeamCreate,
    VirtualKeyCreate,
    VirtualKeyUpdate,
)
from tollhouse.web.bodies import loads_object
from tollhouse.web.responses import dumps
from tollhouse.web.validation import parse


def load_json(raw: bytes):
    return loads_object(raw, 128, exact=True)


async def version(engine) -> int:
    async with engine.connect() as conn:
        return await service.current_version(conn)


async def test_every_write_bumps_the_version_once_and_reads_do_not(engine):
    assert await version(engine) == 0
    async with engine.begin() as conn:
        view = await service.create_customer(conn, parse(CustomerCreate, {"name": "c"}))
    assert await version(engine) == 1
    async with engine.connect() as conn:
        await service.get_customer(conn, view.customer.id)
        await service.list_customers(conn)
    assert await version(engine) == 1
    async with engine.begin() as conn:
        await service.update_customer(conn, view.customer.id, parse(CustomerUpdate, {}))
    async with engine.begin() as conn:
        await service.delete_customer(conn, view.customer.id)
    assert await version(engine) == 3


async def test_a_failed_write_leaves_no_trace(engine):
    body = parse(TeamCreate, {"name": "t", "customer_id": "ghost"})
    with pytest.raises(ValidationFailed, match="ghost"):
        async with engine.begin() as conn:
            await service.create_team(conn, body)
    with pytest.raises(NotFound, match="Customer not found"):
        async with engine.begin() as conn:
            await service.delete_customer(conn, "ghost")
    assert await version(engine) == 0
    async with engine.connect() as conn:
        assert await service.list_teams(conn) == []


async def test_the_version_row_is_recreated_if_missing(engine):
    async with engine.begin() as conn:
        await conn.execute(delete(governance_state))
    async with engine.begin() as conn:
        await service.create_key(conn, parse(VirtualKeyCreate, {"name": "k"}))
    assert await version(engine) == 1


async def test_concurrent_writers_on_separate_connections(engine):
    async with engine.begin() as conn:
        view = await service.create_key(
            conn,
            parse(VirtualKeyCreate, {"name": "k", "budget": {"max_limit": 1,
                                                             "reset_duration": "1h"}}),
        )  # fmt: skip

    async def write(i: int) -> None:
        body = parse(VirtualKeyUpdate, {"name": f"n{i}", "budget": {"max_limit": i}})
        async with engine.begin() as conn:
            await service.update_key(conn, view.key.id, body)

    await asyncio.gather(*(write(i) for i in range(20)))
    assert await version(engine) == 21
    async with engine.connect() as conn:
        final = await service.get_key(conn, view.key.id)
    assert final.budget is not None
    assert final.key.name == f"n{int(final.budget.max_limit)}"


async def test_restart_windows_moves_the_anchors(engine):
    limits = {
        "name": "c",
        "budget": {"max_limit": 1, "reset_duration": "1d"},
        "rate_limit": {"request_max_limit": 1, "request_reset_duration": "1m"},
    }
    async with engine.begin() as conn:
        view = await service.create_customer(conn, parse(CustomerCreate, limits))
    assert view.budget is not None and view.rate_limit is not None
    async with engine.connect() as conn:
        targets = await service.usage_targets(conn, customer_id=view.customer.id)
    assert targets == ([view.budget.id], [view.rate_limit.id])
    async with engine.begin() as conn:
        await service.restart_windows(conn, *targets)
    async with engine.connect() as conn:
        last_reset = await conn.scalar(select(budgets.c.last_reset))
        request_reset = await conn.scalar(select(rate_limits.c.request_last_reset))
    assert last_reset > view.budget.last_reset
    assert request_reset > view.rate_limit.request_last_reset


class FakeMeter:
    """The admission engine's two read methods, with fixed figures."""

    def __init__(self, start: datetime | None) -> None:
        self.start = start

    def budget_usage(self, budget_id: str) -> tuple[Decimal, datetime | None]:
        return Decimal("0.000000123"), self.start

    def rate_usage(self, rate_limit_id: str) -> tuple[int, int, datetime | None, datetime | None]:
        return 42, 7, self.start, None


async def test_json_shows_the_meters_figures_exactly(engine):
    body = {
        "name": "k",
        "budget": {"max_limit": 5, "reset_duration": "1h"},
        "rate_limit": {"token_max_limit": 100, "token_reset_duration": "1m"},
    }
    async with engine.begin() as conn:
        view = await service.create_key(conn, parse(VirtualKeyCreate, body))
    start = datetime(2026, 11, 21, 10, tzinfo=UTC)
    data = orjson.loads(dumps(key_read(view, FakeMeter(start))))
    assert b'"current_usage":0.000000123' in dumps(key_read(view, FakeMeter(start)))
    assert data["budget"]["last_reset"] == "2026-11-21T10:00:00.000000Z"
    assert data["rate_limit"]["token_current_usage"] == 42
    assert data["rate_limit"]["request_current_usage"] == 7
    assert data["rate_limit"]["token_last_reset"] == "2026-11-21T10:00:00.000000Z"
    # No counter loaded: the window is worked out from the stored anchor.
    assert data["rate_limit"]["request_last_reset"] is not None
    assert data["value"].startswith("th-") and len(data["value"]) == 43


async def test_json_without_a_meter_uses_the_stored_anchor(engine):
    body = {"name": "c", "budget": {"max_limit": 5, "reset_duration": "1s"}}
    async with engine.begin() as conn:
        view = await service.create_customer(conn, parse(CustomerCreate, body))
    assert view.budget is not None
    aged = replace(
        view, budget=replace(view.budget, last_reset=view.budget.last_reset - timedelta(seconds=10))
    )
    data = orjson.loads(dumps(customer_read(aged, None)))
    assert data["budget"]["current_usage"] == 0
    # A rolling 1s window from an anchor 10 s ago started at most a second ago.
    started = datetime.fromisoformat(data["budget"]["last_reset"])
    assert datetime.now(UTC) - started < timedelta(seconds=2)


@pytest.mark.parametrize(
    "raw", [b"", b"{", b"[1]", b"NaN", b'{"a": -Infinity}', b"\xff", b"[" * 50000]
)
def test_load_json_refuses(raw):
    with pytest.raises(InvalidJSON, match="^Invalid JSON"):
        load_json(raw)


@pytest.mark.parametrize("amount", ["0", "0.000001", "1E+8", "999999999", "123456789.123456789"])
async def test_amounts_are_stored_exactly(engine, amount):
    body = {"name": "c", "budget": {"max_limit": Decimal(amount), "reset_duration": "1h",
                                    "hard_limit_ratio": Decimal("1.000000001")}}  # fmt: skip
    async with engine.begin() as conn:
        created = await service.create_customer(conn, parse(CustomerCreate, body))
    async with engine.connect() as conn:
        view = await service.get_customer(conn, created.customer.id)
    assert view.budget is not None
    assert view.budget.max_limit == Decimal(amount)
    assert view.budget.hard_limit_ratio == Decimal("1.000000001")
    text = dumps(customer_read(view, None)).decode()
    assert f'"max_limit":{format(Decimal(amount), "f")},' in text
    assert '"hard_limit_ratio":1.000000001,' in text


def test_load_json_keeps_numbers_exact():
    data = load_json(b'{"a": 0.1, "b": 1e11, "c": 9223372036854775807}')
    assert data == {"a": Decimal("0.1"), "b": Decimal("1E+11"), "c": 9223372036854775807}
    assert isinstance(data["c"], int)


async def test_the_api_on_postgres(make_settings, pg_url):
    """One pass of the HTTP API on Postgres: exact numbers, merges, concurrency, deletes."""
    async with running(make_settings(database_url=pg_url)) as (_, client):
        api = "/api/governance"
        body = (
            b'{"name": "c", "budget": {"max_limit": 999999999.999999999, "reset_duration": "1Y"}}'
        )
        customer = await client.post(f"{api}/customers", content=body)
        assert customer.status_code == 201, customer.text
        assert '"max_limit":999999999.999999999,' in customer.text
        customer_id = customer.json()["customer"]["id"]
        team = await client.post(f"{api}/teams", json={"name": "t", "customer_id": customer_id})
        team_id = team.json()["team"]["id"]
        key = await client.post(
            f"{api}/virtual-keys",
            content=b'{"name": "k", "team_id": "%s", "budget": {"max_limit": 0.000001, '
            b'"reset_duration": "1h"}}' % team_id.encode(),
        )
        assert key.status_code == 201 and '"max_limit":0.000001,' in key.text
        key_id = key.json()["virtual_key"]["id"]
        puts = await asyncio.gather(
            *(
                client.put(f"{api}/virtual-keys/{key_id}", json={"budget": {"max_limit": i}})
                for i in range(20)
            )
        )
        assert {r.status_code for r in puts} == {200}
        moved = await client.put(f"{api}/virtual-keys/{key_id}", json={"customer_id": customer_id})
        assert moved.json()["virtual_key"]["customer_id"] == customer_id
        bad = await client.post(f"{api}/teams", json={"name": "x", "customer_id": "ghost"})
        assert bad.status_code == 400
        assert (await client.delete(f"{api}/customers/{customer_id}")).status_code == 200
        orphan = await client.get(f"{api}/virtual-keys/{key_id}")
        assert orphan.json()["virtual_key"]["customer_id"] is None


async def test_amounts_are_stored_in_canonical_form(engine):
    body = {"name": "c", "budget": {"max_limit": Decimal("1E+8"), "reset_duration": "1h",
                                    "hard_limit_ratio": Decimal("1.500000000000")}}  # fmt: skip
    async with engine.begin() as conn:
        await service.create_customer(conn, parse(CustomerCreate, body))
    async with engine.connect() as conn:
        row = (await conn.execute(select(budgets))).one()
        stored = (await conn.execute(text("SELECT max_limit, hard_limit_ratio FROM budgets"))).one()
    assert row.max_limit == 100000000 and row.hard_limit_ratio == Decimal("1.5")
    if engine.dialect.name == "sqlite":  # text, digit for digit
        assert tuple(stored) == ("100000000", "1.5")
