"""The HTTP toolkit's pieces on their own: the JSON writer, query models, the time
reader, and the OpenAPI builder's refusals (docs/http.md)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Annotated

import orjson
import pytest
from pydantic import Field
from starlette.datastructures import QueryParams
from starlette.routing import Route

from tollhouse.errors import ValidationFailed
from tollhouse.web.openapi import Section, document
from tollhouse.web.query import Count, Filter, Moment, Query, parse_time, time_param
from tollhouse.web.responses import JSONResponse, Reply, Time, dumps, rfc3339


class Stamp(Reply):
    at: Time
    amount: Decimal


def test_json_writes_exact_numbers_and_one_time_format():
    paris = timezone(timedelta(hours=1))
    body = dumps(
        {
            "amount": Decimal("12.50"),
            "tiny": Decimal("0.000000001"),
            "big": Decimal("1E+11"),
            "at": datetime(2026, 11, 21, 11, 0, tzinfo=paris),
            "model": Stamp(at=datetime(2026, 1, 1, tzinfo=UTC), amount=Decimal("1.0")),
        }
    )
    assert body == (
        b'{"amount":12.5,"tiny":0.000000001,"big":100000000000,'
        b'"at":"2026-11-21T10:00:00.000000Z",'
        b'"model":{"at":"2026-01-01T00:00:00.000000Z","amount":1}}'
    )
    assert rfc3339(None) is None
    response = JSONResponse(Stamp(at=datetime(2026, 1, 1, tzinfo=UTC), amount=Decimal(3)), 201)
    assert (response.status_code, response.media_type) == (201, "application/json")
    assert orjson.loads(response.body) == {"at": "2026-01-01T00:00:00.000000Z", "amount": 3}
    assert dumps([1], indent=True) == b"[\n  1\n]"


def test_reply_models_refuse_what_they_do_not_list():
    with pytest.raises(ValueError):
        Stamp(at=datetime.now(UTC), amount=Decimal(1), extra=1)  # type: ignore[call-arg]


class Listing(Query):
    limit: Annotated[int, Count(default=50, high=1000)] = 50
    since: Moment = None
    name: Filter = Field(default=None, description="only this name")


@pytest.mark.parametrize(
    ("query", "param"),
    [("limit=²", "limit"), ("limit=１０", "limit"), ("limit=0", "limit"),
     ("limit=1001", "limit"), ("limit=", "limit"), ("limit=9999999999999", "limit"),
     ("since=yesterday", "since"), ("since=0001-01-01T00:00:00%2B01:00", "since")],
)  # fmt: skip
def test_query_refusals_name_the_parameter(query, param):
    with pytest.raises(ValidationFailed) as refused:
        Listing.parse(QueryParams(query))
    assert refused.value.param == param and refused.value.message.startswith(param)


def test_query_values():
    assert Listing.parse(QueryParams("")) == Listing(limit=50, since=None, name=None)
    parsed = Listing.parse(QueryParams("limit=0007&since=1700000000.5&name=&other=x"))
    assert parsed.limit == 7 and parsed.name is None
    assert parsed.since == datetime.fromtimestamp(1700000000.5, UTC)
    schema = Listing.model_json_schema()["properties"]["limit"]
    assert schema == {
        "title": "Limit",
        "type": "integer",
        "minimum": 1,
        "maximum": 1000,
        "default": 50,
    }


def test_one_time_reader():
    assert parse_time("2027-01-01") == datetime(2027, 1, 1, tzinfo=UTC)
    assert parse_time("2027-01-01T01:00:00+01:00") == datetime(2027, 1, 1, tzinfo=UTC)
    assert parse_time("2027-01-01T00:00:00Z").tzinfo is UTC
    with pytest.raises(ValueError, match="RFC 3339"):
        parse_time("1700000000")  # Unix seconds only where asked for
    assert time_param("1700000000", "since") == datetime.fromtimestamp(1700000000, UTC)
    assert time_param("", "since") is None


async def _plain(request):  # pragma: no cover - never called
    raise AssertionError


def test_a_route_that_does_not_describe_itself_is_an_error():
    with pytest.raises(TypeError, match="does not describe itself"):
        document(
            info={},
            sections=[Section("/api", [Route("/x", _plain)], always=())],
            errors={},
            error_model=Stamp,
            components={},
            security_schemes={},
            security=[],
        )
