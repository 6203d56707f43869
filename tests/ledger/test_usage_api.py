"""``GET /api/usage``: newest first, filters, keyset pagination, exact costs."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from tests.ledger.records import T0
from tests.support import flushed


async def add(app, records) -> None:
    for record in records:
        app.services.recorder.add(record)
    await flushed(app)


async def get_usage(gateway, **params: Any) -> dict[str, Any]:
    response = await gateway.get("/api/usage", params=params)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/json")
    return json.loads(response.text, parse_float=Decimal)


def ids(body: dict[str, Any]) -> list[str]:
    return [r["id"] for r in body["usage"]]


async def test_empty_ledger(gateway):
    body = await get_usage(gateway)
    assert body == {"usage": [], "count": 0, "total": 0, "next_cursor": None}


async def test_newest_first(gateway, app, make_record):
    records = [make_record() for _ in range(5)]
    await add(app, reversed(records))
    body = await get_usage(gateway)
    assert ids(body) == [r.id for r in reversed(records)]
    assert (body["count"], body["total"], body["next_cursor"]) == (5, 5, None)


async def test_record_json_fields(gateway, app, make_record):
    record = make_record(key_id="key_1", team_id="team_1", customer_id="cus_1", streamed=True)
    await add(app, [record])
    (row,) = (await get_usage(gateway))["usage"]
    expected = record.row()
    expected["created_at"] = "2026-11-21T10:00:00.000000Z"  # the one time format
    assert row == expected


async def test_costs_are_exact_json_numbers(gateway, app, make_record):
    costs = [
        Decimal("0.000000001"),
        Decimal("0.000001"),
        Decimal("0.0000102"),
        Decimal("12.5"),
        Decimal("0"),
        Decimal("100000"),
        Decimal("9000000000.123456789"),
    ]
    await add(app, [make_record(cost=c) for c in costs])
    response = await gateway.get("/api/usage")
    body = json.loads(response.text, parse_float=Decimal, parse_int=Decimal)
    assert [r["cost"] for r in reversed(body["usage"])] == costs
    # Digit for digit: no exponent, no float rounding, no quotes.
    for literal in (
        '"cost":0.000000001',
        '"cost":0.000001',
        '"cost":0.0000102',
        '"cost":12.5',
        '"cost":0,',
        '"cost":100000,',
        '"cost":9000000000.123456789',
    ):
        assert literal in response.text


async def test_pagination_through_120_records(gateway, app, make_record):
    # Three records share each timestamp, so the id breaks ties.
    records = [
        make_record(id=f"req_{n:04d}", created_at=T0 + timedelta(seconds=n // 3))
        for n in range(120)
    ]
    await add(app, records)
    expected = [r.id for r in sorted(records, key=lambda r: (r.created_at, r.id), reverse=True)]

    seen: list[str] = []
    pages = []
    cursor = None
    while True:
        params = {"limit": 50} if cursor is None else {"limit": 50, "cursor": cursor}
        body = await get_usage(gateway, **params)
        pages.append(body["count"])
        assert body["total"] == 120
        seen.extend(ids(body))
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert pages == [50, 50, 20]
    assert seen == expected  # no duplicates, no gaps, newest first


async def test_pagination_exact_multiple_of_limit(gateway, app, make_record):
    await add(app, [make_record() for _ in range(10)])
    first = await get_usage(gateway, limit=5)
    assert first["next_cursor"] is not None
    second = await get_usage(gateway, limit=5, cursor=first["next_cursor"])
    assert second["count"] == 5
    assert second["next_cursor"] is None


async def test_new_records_do_not_shift_pages(gateway, app, make_record):
    await add(app, [make_record() for _ in range(6)])
    first = await get_usage(gateway, limit=3)
    # Newer records arrive between the two page reads.
    await add(app, [make_record() for _ in range(4)])
    second = await get_usage(gateway, limit=3, cursor=first["next_cursor"])
    assert ids(first) == ["req_000005", "req_000004", "req_000003"]
    assert ids(second) == ["req_000002", "req_000001", "req_000000"]
    assert second["total"] == 10


async def test_cursor_keeps_the_filters_it_is_used_with(gateway, app, make_record):
    await add(app, [make_record(model="a" if n % 2 else "b") for n in range(10)])
    first = await get_usage(gateway, model="a", limit=2)
    second = await get_usage(gateway, model="a", limit=2, cursor=first["next_cursor"])
    assert {r["model"] for r in first["usage"] + second["usage"]} == {"a"}
    assert ids(first) + ids(second) == ["req_000009", "req_000007", "req_000005", "req_000003"]


@pytest.fixture
async def mixed(app, make_record):
    records = [
        make_record(key_id="k1", team_id="t1", customer_id="c1", model="gpt-4o-mini"),
        make_record(key_id="k1", team_id="t1", customer_id="c1", model="gpt-4o"),
        make_record(key_id="k2", team_id="t1", customer_id="c1", model="gpt-4o-mini"),
        make_record(key_id="k3", team_id="t2", customer_id="c2", model="claude-haiku-4-5"),
        make_record(key_id=None, team_id=None, customer_id=None, model="gpt-4o-mini"),
    ]
    await add(app, records)
    return records


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"key_id": "k1"}, ["req_000001", "req_000000"]),
        ({"virtual_key_id": "k2"}, ["req_000002"]),
        ({"team_id": "t1"}, ["req_000002", "req_000001", "req_000000"]),
        ({"customer_id": "c2"}, ["req_000003"]),
        ({"model": "gpt-4o-mini"}, ["req_000004", "req_000002", "req_000000"]),
        ({"model": "gpt-4o-mini", "team_id": "t1"}, ["req_000002", "req_000000"]),
        ({"key_id": "nobody"}, []),
    ],
)
async def test_filters(gateway, mixed, params, expected):
    body = await get_usage(gateway, **params)
    assert ids(body) == expected
    assert body["total"] == len(expected)


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"since": "2026-11-21T10:00:02Z"}, ["req_000004", "req_000003", "req_000002"]),
        ({"until": "2026-11-21T10:00:02Z"}, ["req_000001", "req_000000"]),  # exclusive
        (
            {"since": "2026-11-21T10:00:01+00:00", "until": "2026-11-21T10:00:03"},
            ["req_000002", "req_000001"],
        ),
        ({"since": "2026-11-21T11:00:02+01:00"}, ["req_000004", "req_000003", "req_000002"]),
        ({"since": str(int(T0.timestamp()) + 3)}, ["req_000004", "req_000003"]),
        ({"since": f"{T0.timestamp() + 3.5}"}, ["req_000004"]),
        ({"since": "2026-11-22"}, []),
        ({"until": "2026-11-21"}, []),
        (
            {"since": "2026-11-21", "until": "2026-11-22"},
            [f"req_00000{n}" for n in range(4, -1, -1)],
        ),
        ({"since": "", "until": ""}, [f"req_00000{n}" for n in range(4, -1, -1)]),
    ],
)
async def test_time_filters(gateway, mixed, params, expected):
    body = await get_usage(gateway, **params)
    assert ids(body) == expected
    assert body["total"] == len(expected)


async def test_limit_bounds(gateway, app, make_record):
    await add(app, [make_record() for _ in range(60)])
    assert (await get_usage(gateway))["count"] == 50  # the default
    assert (await get_usage(gateway, limit=1))["count"] == 1
    assert (await get_usage(gateway, limit=1000))["count"] == 60


async def test_requests_through_the_gateway_are_listed(gateway, app):
    hi = [{"role": "user", "content": "hi"}]
    sent = []
    for model in ("gpt-4o-mini", "claude-haiku-4-5"):
        response = await gateway.post(
            "/v1/chat/completions", json={"model": model, "messages": hi, "max_tokens": 1}
        )
        assert response.status_code == 200
        sent.append(response.headers["x-request-id"])
    await flushed(app)
    body = await get_usage(gateway)
    assert ids(body) == list(reversed(sent))
    assert (await get_usage(gateway, model="claude-haiku-4-5"))["usage"][0]["id"] == sent[1]
