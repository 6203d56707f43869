"""Helpers the sandbox tests share: the broker API called as a track and as an operator."""

from __future__ import annotations

from typing import Any

import httpx
from tests.support import decode


async def admin(
    client: httpx.AsyncClient, method: str, path: str, body: Any = None, status: int = 200
) -> Any:
    response = await client.request(method, f"/api{path}", json=body)
    assert response.status_code == status, (method, path, response.status_code, response.text)
    return decode(response)


async def new_token(client: httpx.AsyncClient, name: str = "labs", **more: Any) -> str:
    made = await admin(client, "POST", "/broker-tokens", {"name": name, **more}, 201)
    return str(made["value"])


async def seed(client: httpx.AsyncClient, count: int) -> list[str]:
    return list((await admin(client, "POST", "/sandboxes/seed", {"count": count}, 201))["created"])


def track(token: str, track_id: str, **headers: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}", "x-track-id": track_id, **headers}


async def allocate(
    client: httpx.AsyncClient, token: str, track_id: str, body: Any = None, **headers: str
) -> httpx.Response:
    return await client.post("/v1/allocate", json=body, headers=track(token, track_id, **headers))
