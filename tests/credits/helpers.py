"""Helpers the credits tests share: the credits admin API called as an operator would,
with money read back exactly (``Decimal``)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
from tests.governance.helpers import raw
from tests.support import decode

API = "/api/credits"


async def call(
    client: httpx.AsyncClient,
    method: str,
    path: str,
    body: Any = None,
    status: int = 200,
    **request: Any,
) -> Any:
    if body is not None:
        request["content"] = raw(body)
        request.setdefault("headers", {})["content-type"] = "application/json"
    response = await client.request(method, f"{API}{path}", **request)
    assert response.status_code == status, (method, path, response.status_code, response.text)
    return decode(response)


async def open_account(
    client: httpx.AsyncClient, owner_type: str, owner_id: str, **more: Any
) -> Any:
    body = {"owner_type": owner_type, "owner_id": owner_id, **more}
    return (await call(client, "POST", "/accounts", body, 201))["account"]


async def grant(
    client: httpx.AsyncClient, account_id: str, amount: str, key: str | None = None, **more: Any
) -> Any:
    headers = {"Idempotency-Key": key} if key else {}
    status = more.pop("status", 201)
    body = {"amount": Decimal(amount), **more}
    return (
        await call(client, "POST", f"/accounts/{account_id}/grants", body, status, headers=headers)
    )["grant"]


async def balance(client: httpx.AsyncClient, account_id: str) -> dict[str, Decimal]:
    account = (await call(client, "GET", f"/accounts/{account_id}"))["account"]
    return {name: Decimal(str(value)) for name, value in account["balance"].items()}


async def entries(client: httpx.AsyncClient, account_id: str, **params: Any) -> list[Any]:
    page = await call(client, "GET", f"/accounts/{account_id}/ledger", params=params)
    return list(page["entries"])
