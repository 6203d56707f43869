"""Helpers the governance request-path tests share (a plain module: import, don't conftest).

Entities are created through the admin API (``/api/governance/*``) of the app under test,
as an operator would; the plaintext key comes back once, as ``value``. Money is read back
with ``parse_float=Decimal`` so sums are compared exactly, never as floats.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from datetime import datetime
from decimal import Decimal
from typing import Any

import httpx
from sqlalchemy import String, cast, insert, literal, select
from starlette.applications import Starlette
from tests.support import JSON_WRITES

from tollhouse.app import create_app
from tollhouse.config import Settings
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


def decode(response: httpx.Response) -> Any:
    return json.loads(response.text, parse_float=Decimal)


def _encode(body: Any) -> bytes:
    """JSON with ``Decimal`` written digit for digit (the admin API echoes numbers exactly)."""

    def default(value: Any) -> Any:
        if isinstance(value, Decimal):
            return f"\x00{value}\x00"
        raise TypeError(type(value))

    return (
        json.dumps(body, default=default).replace('"\\u0000', "").replace('\\u0000"', "").encode()
    )


async def admin(
    client: httpx.AsyncClient, method: str, path: str, body: Any = None, *, status: int = 200
) -> Any:
    response = await client.request(
        method,
        f"{API}{path}",
        content=None if body is None else _encode(body),
        headers={"content-type": "application/json"},
    )
    assert response.status_code == status, (method, path, response.status_code, response.text)
    return decode(response)


async def create_customer(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    body.setdefault("name", "acme")
    return dict((await admin(client, "POST", "/customers", body, status=201))["customer"])


async def create_team(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    body.setdefault("name", "search")
    return dict((await admin(client, "POST", "/teams", body, status=201))["team"])


async def create_key(client: httpx.AsyncClient, **body: Any) -> tuple[dict[str, Any], str]:
    """A virtual key; returns ``(entity, plaintext value)``."""
    body.setdefault("name", "k")
    key = dict((await admin(client, "POST", "/virtual-keys", body, status=201))["virtual_key"])
    value = key["value"]
    assert isinstance(value, str) and value.startswith("th-")
    return key, value


_ENVELOPE = {"customers": "customer", "teams": "team", "virtual-keys": "virtual_key"}


async def get_entity(client: httpx.AsyncClient, kind: str, entity_id: str) -> dict[str, Any]:
    """``kind`` is the admin path segment: ``customers``, ``teams`` or ``virtual-keys``."""
    return dict((await admin(client, "GET", f"/{kind}/{entity_id}"))[_ENVELOPE[kind]])


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


async def records(client: httpx.AsyncClient, app: Starlette, **params: str) -> list[dict[str, Any]]:
    """Every usage record so far (flushed first), optionally filtered (``key_id=`` …)."""
    await app.state.recorder.flush()
    response = await client.get("/api/usage", params={"limit": "1000", **params})
    assert response.status_code == 200, response.text
    return list(decode(response)["usage"])


def cost_sum(rows: list[dict[str, Any]]) -> Decimal:
    return sum((Decimal(r["cost"]) for r in rows), Decimal(0))


def scenario(upstream: Any, **fields: Any) -> None:
    """Queue a dev-upstream fault for the next ``count`` requests."""
    httpx.post(f"{upstream.url}/_dev/scenario", json=fields).raise_for_status()


def upstream_stats(upstream: Any) -> dict[str, Any]:
    return dict(httpx.get(f"{upstream.url}/_dev/stats").json())


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


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[tuple[Starlette, httpx.AsyncClient]]:
    """A whole app (lifespan included) and an in-process loopback client for it."""
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application, client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(
            transport=transport, base_url="http://127.0.0.1", headers=JSON_WRITES
        ) as client:
            yield application, client


_OWNER = {"customers": "customer_id", "teams": "team_id", "virtual-keys": "key_id"}


async def assert_counters_match_ledger(
    client: httpx.AsyncClient, app: Starlette, kind: str, entity_id: str
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


async def fill_ledger(app: Starlette, key_id: str, count: int, at: datetime) -> None:
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
    async with app.state.engine.begin() as conn:
        await conn.execute(query)
