"""Budgets and rate limits on customers, teams and keys: exact numbers, defaults,
validation and field-by-field merges."""

from __future__ import annotations

from decimal import Decimal

import pytest
from tests.governance.helpers import (
    KINDS,
    admin,
    bad_request,
    counts,
    create,
    get_entity,
    update,
    without,
)

DURATIONS = ["1s", "5s", "30s", "1m", "2m", "5m", "1h", "2h", "24h", "1d", "1w", "1M", "3M", "6M",
             "1Y"]  # fmt: skip


def budget(max_limit: object = 10000, reset_duration: str = "1h", **more: object) -> dict:
    return {"max_limit": max_limit, "reset_duration": reset_duration, **more}


@pytest.fixture(params=KINDS)
def kind(request):
    return request.param


@pytest.mark.parametrize(
    ("sent", "echoed"),
    [
        (b"0", "0"),
        (b"1", "1"),
        (b"100000000", "100000000"),
        (b"1e8", "100000000"),
        (b"1E+8", "100000000"),
        (b"0.000001", "0.000001"),
        (b"0.000000001", "0.000000001"),
        (b"12.50", "12.5"),
        (b"10.0", "10"),
        (b"1000000000", "1000000000"),  # the ceiling (docs/governance-api.md)
        (b"123456789.123456789", "123456789.123456789"),
    ],
)
async def test_max_limit_is_echoed_exactly(gateway, sent, echoed):
    for kind in KINDS:
        body = b'{"name": "n", "budget": {"max_limit": %s, "reset_duration": "1h"}}' % sent
        response = await gateway.post(f"/api/governance/{kind}", content=body)
        assert response.status_code == 201, response.text
        assert f'"max_limit":{echoed},' in response.text
        entity_id = response.json()[kind.replace("-", "_").rstrip("s")]["id"]
        again = await gateway.get(f"/api/governance/{kind}/{entity_id}")
        assert f'"max_limit":{echoed},' in again.text
        assert '"current_usage":0,' in again.text


async def test_budget_defaults_and_usage(gateway, kind):
    entity = await create(gateway, kind, name="n", budget=budget(500000, "1M"))
    b = entity["budget"]
    assert entity["budget_id"] == b["id"]
    assert b["max_limit"] == 500000 and b["reset_duration"] == "1M"
    assert b["calendar_aligned"] is False and b["timezone"] == "UTC"
    assert b["hard_limit_ratio"] == 1
    assert b["alert_thresholds"] == [Decimal("0.8"), 1]
    assert b["current_usage"] == 0 and b["last_reset"] is not None
    assert b["alert_channels"] is None  # the default channels
    assert set(b) == {"id", "max_limit", "reset_duration", "calendar_aligned", "timezone",
                      "hard_limit_ratio", "alert_thresholds", "alert_channels",
                      "current_usage", "last_reset", "created_at", "updated_at"}  # fmt: skip


async def test_budget_options(gateway, kind):
    options = {
        "calendar_aligned": True,
        "timezone": "Europe/Paris",
        "hard_limit_ratio": Decimal("1.10"),
        "alert_thresholds": [Decimal("0.5"), Decimal("0.9"), Decimal("1.2")],
    }
    options["alert_channels"] = ["ch-1", "ch-2", "ch-1"]
    b = (await create(gateway, kind, name="n", budget=budget(100, "1M", **options)))["budget"]
    assert b["alert_channels"] == ["ch-1", "ch-2"]  # in order, once each
    assert b["calendar_aligned"] is True and b["timezone"] == "Europe/Paris"
    assert b["hard_limit_ratio"] == Decimal("1.1")
    assert b["alert_thresholds"] == options["alert_thresholds"]
    # Nothing counted before the budget existed: its first window starts at creation.
    assert b["last_reset"] == b["created_at"]


async def test_null_budget_options_on_create_take_the_defaults(gateway, kind):
    options = dict.fromkeys(
        ("calendar_aligned", "timezone", "hard_limit_ratio", "alert_thresholds")
    )
    b = (await create(gateway, kind, name="n", budget=budget(**options)))["budget"]
    assert (b["calendar_aligned"], b["timezone"], b["hard_limit_ratio"]) == (False, "UTC", 1)
    assert b["alert_thresholds"] == [Decimal("0.8"), 1]  # as documented, not null


@pytest.mark.parametrize("duration", DURATIONS)
async def test_every_documented_duration(gateway, duration):
    for kind in KINDS:
        entity = await create(
            gateway,
            kind,
            name="n",
            budget=budget(reset_duration=duration),
            rate_limit={"token_max_limit": 1, "token_reset_duration": duration},
        )
        assert entity["budget"]["reset_duration"] == duration
        assert entity["rate_limit"]["token_reset_duration"] == duration


BAD_BUDGETS = [
    budget(-1000),
    budget(Decimal("-0.5")),
    budget(Decimal("0.0000000001")),
    budget("10"),
    budget(True),
    budget(None),
    budget(Decimal("1e27")),
    budget(reset_duration="invalid"),
    budget(reset_duration="invalid_duration"),
    budget(reset_duration="1D"),
    budget(reset_duration="0s"),
    budget(reset_duration="9999Y"),
    budget(reset_duration="999999h"),
    budget(reset_duration=""),
    budget(reset_duration=5),
    budget(reset_duration=None),
    {"max_limit": 10},
    {"reset_duration": "1h"},
    budget(calendar_aligned="yes"),
    budget(calendar_aligned=1),
    budget(timezone="Mars/Olympus_Mons"),
    budget(timezone=3),
    budget(hard_limit_ratio=Decimal("0.9")),
    budget(hard_limit_ratio=True),
    budget(hard_limit_ratio="1.1"),
    budget(hard_limit_ratio=101),
    budget(alert_thresholds=[0]),
    budget(alert_thresholds=[11]),
    budget(alert_thresholds=[True]),
    budget(alert_thresholds=["0.5"]),
    budget(alert_thresholds=Decimal("0.5")),
    budget(alert_thresholds=[Decimal("0.1")] * 21),
    "not_an_object",
    [budget()],
    10,
]


@pytest.mark.parametrize("bad", BAD_BUDGETS)
async def test_bad_budget_is_a_400_on_create(gateway, bad):
    for kind in KINDS:
        error = await bad_request(gateway, "POST", f"/{kind}", {"name": "n", "budget": bad})
        assert "budget" in error["error"]
    assert await counts(gateway) == dict.fromkeys(
        ("virtual_keys_count", "teams_count", "customers_count", "budgets_count",
         "rate_limits_count"), 0
    )  # fmt: skip


BAD_BUDGET_PATCHES = [
    {"max_limit": -1},
    {"max_limit": "10"},
    {"max_limit": True},
    {"max_limit": Decimal("1e-10")},
    {"reset_duration": "invalid"},
    {"reset_duration": 5},
    {"calendar_aligned": 1},
    {"timezone": "Mars/Olympus_Mons"},
    {"hard_limit_ratio": Decimal("0.9")},
    {"alert_thresholds": [0]},
    "not_an_object",
    10,
    [],
]


@pytest.mark.parametrize("bad", BAD_BUDGET_PATCHES)
async def test_bad_budget_is_a_400_on_update(gateway, bad):
    entity = await create(gateway, "teams", name="n", budget=budget(1))
    before = await get_entity(gateway, "teams", entity["id"])
    await bad_request(gateway, "PUT", f"/teams/{entity['id']}", {"budget": bad})
    assert await get_entity(gateway, "teams", entity["id"]) == before


async def test_budget_merges_field_by_field(gateway, kind):
    entity = await create(gateway, kind, name="n")
    assert entity["budget"] is None
    added = await update(gateway, kind, entity["id"], {"budget": budget(10000, "1h")})
    budget_id = added["budget_id"]
    assert added["budget"]["max_limit"] == 10000
    steps = [
        ({"max_limit": 20000, "reset_duration": "2h"}, (20000, "2h")),
        ({"max_limit": 30000}, (30000, "2h")),
        ({"reset_duration": "24h"}, (30000, "24h")),
        ({}, (30000, "24h")),
    ]
    for patch, (max_limit, duration) in steps:
        merged = (await update(gateway, kind, entity["id"], {"budget": patch}))["budget"]
        assert (merged["max_limit"], merged["reset_duration"]) == (max_limit, duration)
        assert merged["id"] == budget_id
        assert merged["last_reset"] == added["budget"]["last_reset"]


@pytest.mark.parametrize(
    ("field", "value", "echo"),
    [
        ("calendar_aligned", True, True),
        ("timezone", "America/New_York", "America/New_York"),
        ("hard_limit_ratio", Decimal("1.25"), Decimal("1.25")),
        ("alert_thresholds", [Decimal("0.5")], [Decimal("0.5")]),
        ("alert_thresholds", [], []),
    ],
)
async def test_budget_option_updated_alone(gateway, field, value, echo):
    entity = await create(gateway, "customers", name="n", budget=budget(7, "1d"))
    before = entity["budget"]
    after = (await update(gateway, "customers", entity["id"], {"budget": {field: value}}))["budget"]
    assert after[field] == echo
    changed = (
        (field, "updated_at", "last_reset")
        if field == "calendar_aligned"
        else (field, "updated_at")
    )
    assert without(after, *changed) == without(before, *changed)


@pytest.mark.parametrize("field", ["max_limit", "reset_duration", "calendar_aligned",
                                   "timezone", "hard_limit_ratio", "alert_thresholds"])  # fmt: skip
async def test_null_budget_field_on_update_is_a_400(gateway, field):
    entity = await create(gateway, "customers", name="n", budget=budget())
    error = await bad_request(
        gateway, "PUT", f"/customers/{entity['id']}", {"budget": {field: None}}
    )
    assert f"budget.{field}" in error["error"] and "null" in error["error"]


@pytest.mark.parametrize("patch", [{"max_limit": 5}, {"reset_duration": "1h"}, {}])
async def test_creating_a_budget_by_update_needs_both_fields(gateway, kind, patch):
    entity = await create(gateway, kind, name="n")
    error = await bad_request(gateway, "PUT", f"/{kind}/{entity['id']}", {"budget": patch})
    assert "max_limit and budget.reset_duration" in error["error"]
    assert (await counts(gateway))["budgets_count"] == 0


async def test_null_budget_removes_it(gateway, kind):
    entity = await create(gateway, kind, name="n", budget=budget())
    removed = await update(gateway, kind, entity["id"], {"budget": None})
    assert removed["budget"] is None and removed["budget_id"] is None
    assert (await counts(gateway))["budgets_count"] == 0
    again = await update(gateway, kind, entity["id"], {"budget": budget(3, "1w")})
    assert again["budget"]["max_limit"] == 3 and again["budget_id"] != entity["budget_id"]


# --- rate limits ----------------------------------------------------------------------

FULL = {
    "token_max_limit": 5000,
    "token_reset_duration": "1h",
    "request_max_limit": 500,
    "request_reset_duration": "1h",
}


@pytest.mark.parametrize(
    "limit",
    [
        FULL,
        {"token_max_limit": 1000, "token_reset_duration": "30s"},
        {"request_max_limit": 100, "request_reset_duration": "5m"},
        {"token_max_limit": 1, "token_reset_duration": "1s"},
        {"token_max_limit": 9223372036854775807, "token_reset_duration": "1Y"},
        {"request_max_limit": 0, "request_reset_duration": "1m"},
    ],
)
async def test_rate_limit_echoed(gateway, kind, limit):
    entity = await create(gateway, kind, name="n", rate_limit=limit)
    echoed = entity["rate_limit"]
    assert entity["rate_limit_id"] == echoed["id"]
    for field, value in limit.items():
        assert echoed[field] == value
    for field in set(FULL) - set(limit):
        assert echoed[field] is None
    assert echoed["token_current_usage"] == 0 and echoed["request_current_usage"] == 0
    assert echoed["token_last_reset"] and echoed["request_last_reset"]


BAD_RATE_LIMITS = [
    {"token_max_limit": 10},
    {"request_max_limit": 10},
    {"token_max_limit": True, "token_reset_duration": "1h"},
    {"token_max_limit": Decimal("1.5"), "token_reset_duration": "1h"},
    {"token_max_limit": "10", "token_reset_duration": "1h"},
    {"token_max_limit": -1, "token_reset_duration": "1h"},
    {"token_max_limit": 2**63, "token_reset_duration": "1h"},
    {"request_max_limit": 1, "request_reset_duration": "1 hour"},
    {"request_max_limit": 1, "request_reset_duration": 60},
    "fast",
]


@pytest.mark.parametrize("bad", BAD_RATE_LIMITS)
async def test_bad_rate_limit_is_a_400(gateway, bad):
    for kind in KINDS:
        error = await bad_request(gateway, "POST", f"/{kind}", {"name": "n", "rate_limit": bad})
        assert "rate_limit" in error["error"]
    assert (await counts(gateway))["rate_limits_count"] == 0


async def test_rate_limit_merges_field_by_field(gateway, kind):
    entity = await create(gateway, kind, name="n")
    first = (await update(gateway, kind, entity["id"], {"rate_limit": {
        "token_max_limit": 1000, "token_reset_duration": "2m",
        "request_max_limit": 200, "request_reset_duration": "2h"}}))["rate_limit"]  # fmt: skip
    steps = [
        ({"token_max_limit": 5000}, (5000, "2m", 200, "2h")),
        ({"request_reset_duration": "1d"}, (5000, "2m", 200, "1d")),
        ({}, (5000, "2m", 200, "1d")),
        ({"request_max_limit": None}, (5000, "2m", None, "1d")),
    ]
    for patch, expected in steps:
        merged = (await update(gateway, kind, entity["id"], {"rate_limit": patch}))["rate_limit"]
        got = tuple(merged.get(f) for f in FULL)
        assert got == expected, patch
        assert merged["id"] == first["id"]
    # A limit without its duration, after the merge, is refused.
    await bad_request(
        gateway, "PUT", f"/{kind}/{entity['id']}", {"rate_limit": {"token_reset_duration": None}}
    )
    removed = await update(gateway, kind, entity["id"], {"rate_limit": None})
    assert removed["rate_limit"] is None and removed["rate_limit_id"] is None
    assert (await counts(gateway))["rate_limits_count"] == 0


async def test_rate_limit_created_by_update(gateway):
    entity = await create(gateway, "virtual-keys", name="n")
    limit = {"request_max_limit": 3, "request_reset_duration": "1m"}
    updated = await update(gateway, "virtual-keys", entity["id"], {"rate_limit": limit})
    assert updated["rate_limit"]["request_max_limit"] == 3
    await bad_request(
        gateway,
        "PUT",
        f"/virtual-keys/{entity['id']}",
        {"rate_limit": {"token_max_limit": 3}},
    )


async def test_a_failed_update_writes_nothing(gateway, kind):
    # The budget is valid and would be created first; the rate limit then fails.
    entity = await create(gateway, kind, name="n")
    before = await get_entity(gateway, kind, entity["id"])
    body = {"name": "changed", "budget": budget(), "rate_limit": {"request_max_limit": 5}}
    await bad_request(gateway, "PUT", f"/{kind}/{entity['id']}", body)
    assert await get_entity(gateway, kind, entity["id"]) == before
    assert (await counts(gateway))["budgets_count"] == 0
    stats = await admin(gateway, "GET", "/debug/stats", status=200)
    version = stats["database_stats"]["version"]
    await bad_request(gateway, "PUT", f"/{kind}/{entity['id']}", body)
    stats = await admin(gateway, "GET", "/debug/stats", status=200)
    assert stats["database_stats"]["version"] == version
