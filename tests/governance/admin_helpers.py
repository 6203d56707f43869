"""Calling the governance admin API from tests (plain functions over the ``gateway`` client)."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import httpx

API = "/api/governance"
# The path segment and the envelope key of each entity.
ENVELOPE = {"customers": "customer", "teams": "team", "virtual-keys": "virtual_key"}
KINDS = tuple(ENVELOPE)


def decode(response: httpx.Response) -> Any:
    """A body with numbers as ``Decimal``/``int`` (never float), to compare them exactly."""
    return json.loads(response.text, parse_float=Decimal)


def raw(body: Any) -> bytes:
    """``Decimal`` values written as JSON numbers, digit for digit."""
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


async def call(
    client: httpx.AsyncClient, method: str, path: str, body: Any = None, *, status: int
) -> Any:
    content = None if body is None else raw(body)
    response = await client.request(
        method, f"{API}{path}", content=content, headers={"content-type": "application/json"}
    )
    assert response.status_code == status, (method, path, response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    return decode(response)


async def create(client: httpx.AsyncClient, kind: str, **body: Any) -> dict[str, Any]:
    data = await call(client, "POST", f"/{kind}", body, status=201)
    assert set(data) == {"message", ENVELOPE[kind]}
    return dict(data[ENVELOPE[kind]])


async def get(client: httpx.AsyncClient, kind: str, entity_id: str) -> dict[str, Any]:
    data = await call(client, "GET", f"/{kind}/{entity_id}", status=200)
    return dict(data[ENVELOPE[kind]])


async def update(
    client: httpx.AsyncClient, kind: str, entity_id: str, body: Any, *, status: int = 200
) -> Any:
    data = await call(client, "PUT", f"/{kind}/{entity_id}", body, status=status)
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
    data = await call(client, method, path, body, status=400)
    assert set(data) == {"error", "code"}, data
    assert isinstance(data["error"], str) and data["error"]
    assert data["code"] in ("invalid_json", "invalid_value")
    return dict(data)


async def counts(client: httpx.AsyncClient) -> dict[str, int]:
    data = await call(client, "GET", "/debug/stats", status=200)
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
