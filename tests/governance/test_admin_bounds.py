"""Bounds of admin input: money that fits the 64-bit nano-dollar counters, numbers that
cannot overflow, short error messages, and validation whose memory follows the body."""

from __future__ import annotations

import contextlib
import tracemalloc
from decimal import Decimal

import pytest
from tests.governance.helpers import bad_request, counts, create, get_entity, update

from tollhouse.errors import BadRequest
from tollhouse.governance.schemas import VirtualKeyCreate
from tollhouse.web.bodies import loads_object
from tollhouse.web.validation import parse

CEILING = Decimal(1_000_000_000)  # USD, max_limit × hard_limit_ratio (docs)
KINDS = ("customers", "teams", "virtual-keys")


def budget(max_limit: object, **more: object) -> dict[str, object]:
    return {"name": "n", "budget": {"max_limit": max_limit, "reset_duration": "1d", **more}}


@pytest.mark.parametrize(
    "raw_limit",
    [
        b"-1e1000000",
        b"1e1000000",
        b"1e-1000000",
        b"-" + b"9" * 100_000,
        b"1" + b"0" * 5000,  # past int()'s 4300 digits: the field is named, not "Invalid JSON"
        b"0." + b"1" * 100_000,
    ],
)
async def test_absurd_numbers_are_a_short_400_naming_the_field(gateway, raw_limit):
    body = b'{"name": "n", "budget": {"max_limit": %s, "reset_duration": "1d"}}' % raw_limit
    for kind in KINDS:
        response = await gateway.post(f"/api/governance/{kind}", content=body)
        assert response.status_code == 400, response.text[:300]
        error = response.json()["error"]
        assert "max_limit" in error and len(error) < 300, error[:300]
    assert set((await counts(gateway)).values()) == {0}


@pytest.mark.parametrize("field", ["alert_thresholds", "hard_limit_ratio"])
async def test_absurd_ratios_are_a_short_400(gateway, field):
    value = b"[-1e1000000]" if field == "alert_thresholds" else b"1e1000000"
    body = b'{"name": "n", "budget": {"max_limit": 1, "reset_duration": "1d", "%s": %s}}' % (
        field.encode(),
        value,
    )
    response = await gateway.post("/api/governance/teams", content=body)
    assert response.status_code == 400 and field in response.json()["error"], response.text


@pytest.mark.parametrize(
    ("body", "echo"),
    [
        ({"name": "k", "team_id": "t" * 100_000}, "t" * 65),
        ({"name": "k", "budget": {"max_limit": 1, "reset_duration": "d" * 100_000}}, "d" * 65),
        (
            {
                "name": "k",
                "budget": {"max_limit": 1, "reset_duration": "1d", "timezone": "z" * 100_000},
            },
            "z" * 65,
        ),  # fmt: skip
        ({"name": "k", "junk": {"x" * 100_000: "\x00"}}, "x" * 65),
        ({"name": "k", "allowed_models": ["m" * 100_000 + "\x00"]}, "m" * 65),
    ],
)
async def test_messages_never_echo_more_than_a_short_prefix(gateway, body, echo):
    error = await bad_request(gateway, "POST", "/virtual-keys", body)
    assert echo not in error["error"] and len(error["error"]) < 400, error["error"][:400]


@pytest.mark.parametrize(
    "max_limit", [Decimal("9223372036854775807"), Decimal("9223372036.854775808"), CEILING + 1]
)
async def test_budgets_above_the_ceiling_are_refused_at_write_time(gateway, max_limit):
    for kind in KINDS:
        error = await bad_request(gateway, "POST", f"/{kind}", budget(max_limit))
        assert "budget.max_limit" in error["error"] and "1000000000" in error["error"]
    assert set((await counts(gateway)).values()) == {0}


async def test_the_ceiling_counts_the_hard_limit_ratio(gateway):
    team = await create(gateway, "teams", **budget(CEILING))  # exactly at the ceiling: fine
    assert team["budget"]["max_limit"] == CEILING
    error = await bad_request(gateway, "POST", "/teams", budget(CEILING / 2, hard_limit_ratio=3))
    assert "budget.hard_limit_ratio" in error["error"]
    # An update that would cross it through either field is refused, and changes nothing.
    small = await create(gateway, "teams", **budget(CEILING / 4, hard_limit_ratio=2))
    before = await get_entity(gateway, "teams", small["id"])
    for change, field in (
        ({"hard_limit_ratio": 5}, "budget.hard_limit_ratio"),
        ({"max_limit": CEILING}, "budget.max_limit"),
    ):
        error = await update(gateway, "teams", small["id"], {"budget": change}, status=400)
        assert field in error["error"], error
    assert await get_entity(gateway, "teams", small["id"]) == before
    await update(gateway, "teams", small["id"], {"budget": {"hard_limit_ratio": 4}})


def peak_multiple(raw: bytes) -> float:
    tracemalloc.start()
    try:
        with contextlib.suppress(BadRequest):
            parse(VirtualKeyCreate, loads_object(raw, 128, exact=True))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak / len(raw)


MB = 1_000_000
BODIES = {
    "long list of wrong types": b'{"name":"k","allowed_models":[' + b",".join([b"1"] * (MB // 2)),
    "long list of nulls": b'{"name":"k","allowed_models":[' + b",".join([b"null"] * (MB // 5)),
    "long list of numbers": b'{"name":"k","budget":{"alert_thresholds":['
    + b",".join([b"0.5"] * (MB // 4)),
    "long list of channel ids": b'{"name":"k","budget":{"alert_channels":['
    + b",".join([b"1"] * (MB // 2)),
    "long unknown list": b'{"name":"k","junk":[' + b",".join([b'"a"'] * (MB // 4)),
    # As deep as a body may be (``max_json_depth``, 128): deeper is refused.
    "deep and wide": b'{"name":"k","junk":['
    + b",".join([b'{"a":' * 120 + b"1" + b"}" * 120] * (MB // 720)),
}


@pytest.mark.parametrize("shape", BODIES)
def test_validation_memory_follows_the_body(shape):
    raw = BODIES[shape]
    raw += b"]" + b"}" * (raw.count(b"{") - raw.count(b"}"))
    assert len(raw) > MB * 0.9
    # Decoding alone makes Python objects (a Decimal is ~100 bytes for "0.5"): the
    # bound is on everything after, which used to be hundreds of times the body.
    assert peak_multiple(raw) < 40
