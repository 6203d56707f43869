"""A stream whose client is gone before its first byte still ends exactly once (issue 9).

The ASGI server is the edge here: the app is called with our own ``receive``/``send``, as
uvicorn would call it, with a ``send`` that fails on ``http.response.start`` (the client
hung up between the request and the response). Whatever happens, the reservation
settles, the in-flight gauge returns to 0, the upstream connection is closed and exactly
one usage record is written.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from decimal import Decimal
from typing import Any

import orjson
import pytest
from tests.governance.helpers import (
    CHAT,
    HI,
    MODEL,
    assert_counters_match_ledger,
    counters,
    create_key,
)
from tests.support import LiveServer, records, running, scenario, upstream_stats

STREAM = {"model": MODEL, "messages": HI, "max_tokens": 16, "stream": True}


def wait_for_upstream(upstream: Any, **want: int) -> dict[str, Any]:
    """The dev upstream's stats once they show ``want`` (it notices hang-ups at once)."""
    deadline = time.monotonic() + 5
    while True:
        stats = upstream_stats(upstream)
        if all(stats[k] == v for k, v in want.items()) or time.monotonic() > deadline:
            return stats
        time.sleep(0.02)


def _scope(path: str, value: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"tollhouse"),
            (b"content-type", b"application/json"),
            (b"authorization", f"Bearer {value}".encode()),
        ],
        "client": ("127.0.0.1", 50001),
        "server": ("127.0.0.1", 80),
        "state": {},
    }


class ClientGone(OSError):
    """What an ASGI server raises from ``send`` once the socket is closed."""


def in_flight(app: Any) -> float:
    return float(app.services.metrics.in_flight._value.get())


@pytest.mark.parametrize("path", [CHAT, "/v1/messages"])
async def test_a_stream_whose_start_cannot_be_sent_settles_and_records(
    make_settings, upstream, path
):
    settings = make_settings(allow_anonymous=False)
    async with running(settings) as (app, client):
        budget = {"max_limit": Decimal("1"), "reset_duration": "1h"}
        rate = {"request_max_limit": 100, "request_reset_duration": "1h"}
        key, value = await create_key(client, budget=budget, rate_limit=rate)
        body = dict(STREAM)
        if path != CHAT:
            body["model"] = "claude-haiku-4-5"
        scenario(upstream, chunk_delay_ms=50)  # the provider is still generating
        request = {"type": "http.request", "body": orjson.dumps(body), "more_body": False}
        received = [request]
        started: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            if received:
                return received.pop()
            await asyncio.sleep(3600)  # the server never saw the hang-up
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                started.append(message)
                raise ClientGone("client disconnected")

        with contextlib.suppress(Exception):
            async with asyncio.timeout(10):
                await app(_scope(path, value), receive, send)
        assert started and started[0]["status"] == 200  # it was a stream that failed to start

        rows = await records(client, app)
        assert len(rows) == 1, rows
        (row,) = rows
        assert (row["status"], row["http_status"], row["streamed"]) == ("cancelled", 499, True)
        assert row["key_id"] == key["id"]
        assert in_flight(app) == 0
        for counter in await counters(client):
            assert Decimal(str(counter["reserved"])) == 0, counter
        await assert_counters_match_ledger(client, app, "virtual-keys", key["id"])
        stats = wait_for_upstream(upstream, in_flight=0, cancelled=1)
        assert (stats["in_flight"], stats["cancelled"], stats["completed"]) == (0, 1, 0)


def test_a_client_that_hangs_up_right_after_its_request(make_settings, upstream):
    """Over a real socket: the request is sent whole, then the client closes at once."""
    settings = make_settings(allow_anonymous=True)
    scenario(upstream, chunk_delay_ms=50)
    with LiveServer(settings) as live:
        payload = orjson.dumps(STREAM)
        head = (
            f"POST {CHAT} HTTP/1.1\r\nHost: tollhouse\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n"
        ).encode()
        with socket.create_connection(("127.0.0.1", live.port)) as sock:
            sock.sendall(head + payload)
        deadline = time.monotonic() + 5
        rows: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            rows = live.usage()
            if rows and in_flight(live.app) == 0:
                break
            time.sleep(0.05)
        assert len(rows) == 1, rows
        assert (rows[0]["status"], rows[0]["http_status"]) == ("cancelled", 499)
        assert in_flight(live.app) == 0
        stats = wait_for_upstream(upstream, in_flight=0)
        assert stats["in_flight"] == 0 and stats["completed"] == 0
