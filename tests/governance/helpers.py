"""Helpers the governance tests share: the admin API (``/api/governance/*``) called as an
operator would, and the request path's arithmetic.

Entities are created through the admin API of the app under test; the plaintext key
comes back once, as ``value``. Money is read back with ``parse_float=Decimal`` and
written digit for digit, so sums are compared exactly, never as floats. Helpers every
directory uses (``running``, ``records``, ``scenario``, ``upstream_stats``) live in
``tests/support.py``; the request-path tests import them from here as well.
"""

from __future__ import annotations

import json
from datetime import datetime
from decimal import Decimal
from typing import Any

import httpx
from sqlalchemy import String, cast, insert, literal, select
from tests.support import decode
from tests.support import records as records
from tests.support import running as running
from tests.support import scenario as scenario
from tests.support import upstream_stats as upstream_stats

from tollhouse.app import Tollhouse
from tollhouse.db.types import Money, UTCDateTime
from tollhouse.gateway.estimate import PER_MESSAGE_OVERHEAD, PER_REQUEST_OVERHEAD
from tollhouse.ledger.models import usage_records
from tollhouse.money import NANOS_PER_USD, to_nanos
from tollhouse.pricing import load_catalog

API = "/api/governance"
HI = [{"role": "user", "content": "hi"}]
CHAT = "/v1/chat/completions"
MODEL = "gpt-4o-mini"

# gpt-4o-mini in the shipped catalog: USD per 1M tokens (0.15 in, 0.60 out when written).
_PRICE = load_catalog().get("openai", MODEL)
assert _PRICE is not None
INPUT_PRICE, OUTPUT_PRICE = _PRICE.input, _PRICE.output


# The path segment and the envelope key of each entity.
ENVELOPE = {"customers": "customer", "teams": "team", "virtual-keys": "virtual_key"}
KINDS = tuple(ENVELOPE)


def raw(body: Any) -> bytes:
    """JSON with ``Decimal`` written digit for digit (the admin API echoes numbers exactly);
    bytes are sent as they are."""
    if isinstance(body, bytes):
        return body

    def encode(value: Any) -> Any:
        if isinstance(value, Decimal):
            return _Number(value)
        raise TypeError(type(value))

    text = json.dumps(body, default=encode)
    return text.replace('"__num__', "").replace('__num__"', "").encode()


class _Number(str):
    def __new__(cls, value: Decimal) -> _Number:
        return super().__new__(cls, f"__num__{value}__num__")


async def admin(
    client: httpx.AsyncClient, method: str, path: str, body: Any = None, *, status: int = 200
) -> Any:
    """One admin API call under ``/api/governance``: asserts ``status`` and a JSON answer,
    returns the body with exact numbers."""
    content = None if body is None else raw(body)
    response = await client.request(
        method, f"{API}{path}", content=content, headers={"content-type": "application/json"}
    )
    assert response.status_code == status, (method, path, response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    return decode(response)


async def create(client: httpx.AsyncClient, kind: str, **body: Any) -> dict[str, Any]:
    """Create a ``customers``/``teams``/``virtual-keys`` entity; the entity."""
    data = await admin(client, "POST", f"/{kind}", body, status=201)
    assert set(data) == {"message", ENVELOPE[kind]}
    return dict(data[ENVELOPE[kind]])


async def get_entity(client: httpx.AsyncClient, kind: str, entity_id: str) -> dict[str, Any]:
    """``kind`` is the admin path segment: ``customers``, ``teams`` or ``virtual-keys``."""
    return dict((await admin(client, "GET", f"/{kind}/{entity_id}"))[ENVELOPE[kind]])


async def update(
    client: httpx.AsyncClient, kind: str, entity_id: str, body: Any, *, status: int = 200
) -> Any:
    data = await admin(client, "PUT", f"/{kind}/{entity_id}", body, status=status)
    if status != 200:
        return data
    assert data["message"].endswith("updated successfully")
    return dict(data[ENVELOPE[kind]])


async def listing(client: httpx.AsyncClient, kind: str, **params: str) -> list[dict[str, Any]]:
    response = await client.get(f"{API}/{kind}", params=params)
    assert response.status_code == 200, response.text
    data = decode(response)
    plural = f"{ENVELOPE[kind]}s"
    assert set(data) == {plural, "count"}
    assert data["count"] == len(data[plural])
    return list(data[plural])


async def bad_request(
    client: httpx.AsyncClient, method: str, path: str, body: Any
) -> dict[str, Any]:
    """A 400 in the admin error shape; returns the body."""
    data = await admin(client, method, path, body, status=400)
    assert set(data) == {"error", "code"}, data
    assert isinstance(data["error"], str) and data["error"]
    assert data["code"] in ("invalid_json", "invalid_value")
    return dict(data)


async def counts(client: httpx.AsyncClient) -> dict[str, int]:
    """Rows per table (``/debug/stats``), without the change version."""
    data = await admin(client, "GET", "/debug/stats")
    stats = dict(data["database_stats"])
    stats.pop("version")
    return stats


def without(data: Any, *names: str) -> Any:
    """``data`` with the keys ``names`` removed at every depth (e.g. ``updated_at``)."""
    if isinstance(data, dict):
        return {k: without(v, *names) for k, v in data.items() if k not in names}
    if isinstance(data, list):
        return [without(v, *names) for v in data]
    return data


async def create_customer(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    body.setdefault("name", "acme")
    return await create(client, "customers", **body)


async def create_team(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    body.setdefault("name", "search")
    return await create(client, "teams", **body)


async def create_key(client: httpx.AsyncClient, **body: Any) -> tuple[dict[str, Any], str]:
    """A virtual key; returns ``(entity, plaintext value)``."""
    body.setdefault("name", "k")
    key = await create(client, "virtual-keys", **body)
    value = key["value"]
    assert isinstance(value, str) and value.startswith("th-")
    return key, value


async def usage_reset(client: httpx.AsyncClient, **which: str) -> None:
    await admin(client, "POST", "/usage-reset", which)


async def counters(client: httpx.AsyncClient) -> list[dict[str, Any]]:
    return list((await admin(client, "GET", "/debug/counters"))["counters"])


def auth(value: str) -> dict[str, str]:
    return {"authorization": f"Bearer {value}"}


def chat_body(**extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": HI, "max_tokens": 16, **extra}


async def chat(client: httpx.AsyncClient, value: str | None, **extra: Any) -> httpx.Response:
    headers = auth(value) if value is not None else {}
    return await client.post(CHAT, json=chat_body(**extra), headers=headers)


def cost_sum(rows: list[dict[str, Any]]) -> Decimal:
    return sum((Decimal(r["cost"]) for r in rows), Decimal(0))


def hi_prompt_bound() -> int:
    """The gateway's prompt bound for ``HI`` (bytes of the message + overheads)."""
    message_bytes = sum(len(k) + len(v) for k, v in HI[0].items())
    return PER_REQUEST_OVERHEAD + message_bytes + PER_MESSAGE_OVERHEAD


def worst_case_nanos(max_tokens: int = 16) -> int:
    """The reservation of one ``chat_body(max_tokens=…)`` request to gpt-4o-mini, in nanos."""
    usd = (hi_prompt_bound() * INPUT_PRICE + max_tokens * OUTPUT_PRICE) / 1_000_000
    return to_nanos(usd)


def actual_nanos(max_tokens: int = 16) -> int:
    """What the dev upstream's reply to ``chat_body`` costs: 4 prompt tokens, ``max_tokens``
    (≤ 16) completion tokens."""
    return to_nanos(_PRICE.cost(4, min(max_tokens, 16)))


def sequential_admits(limit_nanos: int, max_tokens: int = 16) -> int:
    """How many ``chat_body`` requests in a row a budget of ``limit_nanos`` admits: each
    needs its worst case free and then commits its actual cost."""
    committed = admitted = 0
    while committed + worst_case_nanos(max_tokens) <= limit_nanos:
        committed += actual_nanos(max_tokens)
        admitted += 1
    return admitted


def usd(nanos: int) -> Decimal:
    return Decimal(nanos) / NANOS_PER_USD


_OWNER = {"customers": "customer_id", "teams": "team_id", "virtual-keys": "key_id"}


async def assert_counters_match_ledger(
    client: httpx.AsyncClient, app: Tollhouse, kind: str, entity_id: str
) -> list[dict[str, Any]]:
    """The entity's budget and rate-limit counters (as the admin API shows them) equal
    what its ledger records add up to, to the last nano-dollar; no capacity stays held.
    Every record counts as one request (failures included), its tokens and its cost."""
    rows = await records(client, app, **{_OWNER[kind]: entity_id})
    entity = await get_entity(client, kind, entity_id)
    budget = entity.get("budget")
    if budget is not None:
        assert Decimal(budget["current_usage"]) == cost_sum(rows), (budget, rows)
    rate = entity.get("rate_limit")
    if rate is not None:
        if rate.get("request_max_limit") is not None:
            assert rate["request_current_usage"] == len(rows)
        if rate.get("token_max_limit") is not None:
            tokens = sum(r["prompt_tokens"] + r["completion_tokens"] for r in rows)
            assert rate["token_current_usage"] == tokens
    for counter in await counters(client):
        assert Decimal(str(counter["reserved"])) == 0, counter
    return rows


async def fill_ledger(app: Tollhouse, key_id: str, count: int, at: datetime) -> None:
    """``count`` zero-cost error records of ``key_id`` at ``at``, in one INSERT … SELECT:
    a ledger as big as a busy key's day, which makes rebuilding its counters take a while.
    """
    numbers = select(literal(1).label("n")).cte("numbers", recursive=True)
    numbers = numbers.union_all(select(numbers.c.n + 1).where(numbers.c.n < count))
    t = usage_records.c
    values = {
        t.id: literal(f"filler-{key_id}-").concat(cast(numbers.c.n, String)),
        t.created_at: literal(at, UTCDateTime()),
        t.key_id: literal(key_id),
        t.endpoint: literal("chat"),
        t.provider: literal("openai"),
        t.model: literal(MODEL),
        t.prompt_tokens: literal(0),
        t.completion_tokens: literal(0),
        t.cached_tokens: literal(0),
        t.cost: literal(Decimal(0), Money()),
        t.priced: literal(True),
        t.latency_ms: literal(0.0),
        t.status: literal("error"),
        t.http_status: literal(502),
        t.streamed: literal(False),
    }
    query = insert(usage_records).from_select(list(values), select(*values.values()))
    async with app.services.engine.begin() as conn:
        await conn.execute(query)
