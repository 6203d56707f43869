"""Provider redirects are not followed: the credentials never reach another host (issue 9).

aiohttp follows redirects by default and drops ``Authorization`` on a cross-origin hop,
but not custom headers (``x-api-key``, ``api-key``). Two real loopback servers stand in
for the edge: one answers 307 towards the other, which records whatever reaches it.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from decimal import Decimal
from typing import Any

import httpx
import pytest
from aiohttp import web
from tests.support import flushed

from tollhouse.app import create_app

HI = [{"role": "user", "content": "hi"}]


@contextlib.asynccontextmanager
async def serve(handler: Any) -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def redirecting(status: int) -> AsyncIterator[tuple[str, list[Any], list[Any]]]:
    """``(redirecting base URL, requests it got, requests the target got)``."""
    first: list[Any] = []
    second: list[Any] = []

    async def target(request: web.Request) -> web.Response:
        second.append((request.path, dict(request.headers), await request.read()))
        return web.json_response({"error": {"message": "should not be here"}}, status=500)

    async with serve(target) as elsewhere:

        async def redirect(request: web.Request) -> web.Response:
            first.append((request.path, dict(request.headers)))
            location = f"{elsewhere}{request.path}"
            return web.Response(status=status, headers={"location": location})

        async with serve(redirect) as base:
            yield base, first, second


@contextlib.asynccontextmanager
async def gateway_for(make_settings: Any, providers: dict[str, Any]) -> AsyncIterator[Any]:
    app = create_app(make_settings(providers=providers, max_retries=2))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as c:
            yield c, app


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_anthropic_redirect_is_a_502_and_x_api_key_stays_home(make_settings, status):
    async with redirecting(status) as (base, first, second):
        providers = {
            "anthropic": {"preset": "anthropic", "base_url": base, "api_key": "sk-ant-secret"}
        }
        async with gateway_for(make_settings, providers) as (client, app):
            body = {"model": "claude-haiku-4-5", "messages": HI, "max_tokens": 8}
            response = await client.post("/v1/messages", json=body)
            assert response.status_code == 502, response.text
            error = response.json()["error"]
            assert "redirect" in error["message"] and str(status) in error["message"]
            assert second == []  # nothing, and no credential, reached the other host
            assert len(first) == 1  # a redirect is not retried either
            assert first[0][1]["x-api-key"] == "sk-ant-secret"
            await flushed(app)
            usage = json.loads((await client.get("/api/usage")).text, parse_float=Decimal)
            (row,) = usage["usage"]
            assert (row["status"], row["http_status"], row["cost"]) == ("error", 502, 0)


async def test_openai_compatible_redirect_keeps_custom_headers_home(make_settings):
    async with redirecting(307) as (base, first, second):
        providers = {
            "azure": {
                "type": "openai",
                "base_url": base,
                "api_key": "sk-secret",
                "headers": {"api-key": "azure-secret"},
                "allow_unpriced": True,
            }
        }
        async with gateway_for(make_settings, providers) as (client, _):
            for stream in (False, True):
                body = {"model": "gpt-4o-mini", "messages": HI, "stream": stream}
                response = await client.post("/v1/chat/completions", json=body)
                assert response.status_code == 502, response.text
                assert "redirect" in response.json()["error"]["message"]
            assert second == []
            assert len(first) == 2
