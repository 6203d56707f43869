"""Providers that answer 2xx without usage, or with a body we cannot read, are never free.

Some self-hosted OpenAI-compatible servers omit ``usage``. The stand-in here is a real
HTTP server on loopback (an external edge, like the dev upstream), answering fixed bodies.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from decimal import Decimal

import pytest
import uvicorn
from tests.support import flushed

from tollhouse.app import create_app
from tollhouse.gateway.estimate import prompt_token_bound
from tollhouse.pricing import load_catalog

NO_USAGE = json.dumps(
    {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "four words of reply"},
                "finish_reason": "stop",
            }
        ],
    }
).encode()
BODIES = {"/v1/chat/completions": NO_USAGE}


async def _app(scope, receive, send):
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    body = BODIES.get(scope["path"], b"this is not json")
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def bare_upstream() -> Iterator[str]:
    config = uvicorn.Config(_app, host="127.0.0.1", port=0, log_config=None, lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        threading.Event().wait(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(5)


BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello there"}]}


async def _record(make_settings, base_url: str, path: str):
    import httpx

    settings = make_settings(providers={"openai": {"preset": "openai", "base_url": base_url}})
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            response = await client.post(path, json=BODY)
            await flushed(app)
            listed = await client.get("/api/usage")
    (record,) = json.loads(listed.text, parse_float=Decimal)["usage"]
    return response, record


async def test_a_reply_without_usage_is_charged_its_bounds(make_settings, bare_upstream):
    response, record = await _record(make_settings, f"{bare_upstream}/v1", "/v1/chat/completions")
    assert response.status_code == 200
    price = load_catalog().get("openai", "gpt-4o-mini")
    prompt, completion = prompt_token_bound(BODY), len(NO_USAGE)
    assert (record["prompt_tokens"], record["completion_tokens"]) == (prompt, completion)
    assert record["cost"] == price.cost(prompt, completion) > 0


async def test_an_unreadable_2xx_is_502_and_still_charged(make_settings, bare_upstream):
    # Served from a path the bare upstream answers with a body that is not JSON.
    response, record = await _record(
        make_settings, f"{bare_upstream}/other", "/v1/chat/completions"
    )
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_error"
    assert (record["status"], record["http_status"]) == ("error", 502)
    assert record["completion_tokens"] == len(b"this is not json")
    assert record["cost"] > 0
