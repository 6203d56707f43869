"""Helpers the policy tests share: the policies admin API called as an operator would."""

from __future__ import annotations

from typing import Any

import httpx
from tests.governance.helpers import raw
from tests.support import decode

API = "/api/policies"


async def call(
    client: httpx.AsyncClient, method: str, path: str = "", body: Any = None, status: int = 200
) -> Any:
    request: dict[str, Any] = {}
    if body is not None:
        request["content"] = raw(body)
        request["headers"] = {"content-type": "application/json"}
    response = await client.request(method, f"{API}{path}", **request)
    assert response.status_code == status, (method, path, response.status_code, response.text)
    return decode(response)


async def create_policy(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    body.setdefault("action", "llm.request")
    body.setdefault("effect", "allow")
    return dict((await call(client, "POST", "", body, 201))["policy"])


async def refused(client: httpx.AsyncClient, body: dict[str, Any], status: int = 400) -> str:
    """The error message of a create that is refused."""
    return str((await call(client, "POST", "", body, status))["error"])


async def decisions(client: httpx.AsyncClient, query: str = "", status: int = 200) -> Any:
    """``GET /api/policy-decisions`` (the decision log) with ``query`` (``?policy_id=…``)."""
    response = await client.get(f"/api/policy-decisions{query}")
    assert response.status_code == status, response.text
    return decode(response)
