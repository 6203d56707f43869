"""Helpers the tests of every directory share (fixtures live in conftest.py).

A directory's own helpers live in its ``helpers.py``; what two directories need is here:
settings for a database URL, the app running in-process, the ledger read exactly, the
dev upstream's controls, metrics, and ``LiveServer`` (the app under a real uvicorn).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from decimal import Decimal
from typing import Any, Protocol

import httpx
import uvicorn
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.ext.asyncio import AsyncEngine

from tollhouse.app import Tollhouse, create_app
from tollhouse.config import Settings, load_settings
from tollhouse.db import create_engine
from tollhouse.db.schema import upgrade
from tollhouse.web.server import server_config

# The keyless (loopback) admin API takes writes as JSON only; in-process clients say so
# by default, as every real client of it does (tests of that rule build their own).
JSON_WRITES = {"content-type": "application/json"}


def upstream_env(url: str) -> dict[str, str]:
    """Environment that points Tollhouse's OpenAI and Anthropic providers at ``url``."""
    return {
        "OPENAI_BASE_URL": f"{url}/v1",
        "OPENAI_API_KEY": "sk-test-upstream",
        "ANTHROPIC_BASE_URL": url,
        "ANTHROPIC_API_KEY": "sk-ant-test-upstream",
    }


class Served(Protocol):
    """A server with a base URL: the dev upstream (``BackgroundServer``), ``LiveServer``."""

    @property
    def url(self) -> str: ...


def settings_for(database_url: str, **overrides: Any) -> Settings:
    """Settings on ``database_url`` and nothing else (no config file, no environment)."""
    return load_settings(
        env={"TOLLHOUSE_CONFIG": os.devnull}, database_url=database_url, **overrides
    )


@contextlib.asynccontextmanager
async def engine_for(database_url: str, *, migrated: bool = True) -> AsyncIterator[AsyncEngine]:
    """An engine on ``database_url`` (migrated to head unless told), disposed at the end."""
    engine = create_engine(settings_for(database_url))
    try:
        if migrated:
            await upgrade(engine)
        yield engine
    finally:
        await engine.dispose()


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[tuple[Tollhouse, httpx.AsyncClient]]:
    """A whole app (lifespan included) and an in-process loopback client for it, for a
    test that needs settings of its own (the ``app``/``gateway`` fixtures otherwise)."""
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application, client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(
            transport=transport, base_url="http://127.0.0.1", headers=JSON_WRITES
        ) as client:
            yield application, client


@contextlib.contextmanager
def redis_down(redis_server: Any) -> Iterator[None]:
    """Redis killed for the block (SIGKILL, as in a crash), started again after it on the
    same port, empty."""
    redis_server.stop()
    try:
        yield
    finally:
        if not redis_server.running:
            redis_server.start()


def decode(response: httpx.Response) -> Any:
    """A body with numbers as ``Decimal``/``int`` (never float), to compare them exactly."""
    return json.loads(response.text, parse_float=Decimal)


async def flushed(app: Tollhouse) -> None:
    """Wait until every usage record so far is in the database."""
    await app.services.recorder.flush()


async def records(
    client: httpx.AsyncClient, app: Tollhouse, *, refused: bool = False, **params: str
) -> list[dict[str, Any]]:
    """Every usage record so far (flushed first), newest first, optionally filtered
    (``key_id=`` …), with money as exact ``Decimal``. Refusals (status ``refused``: no
    provider saw them, nothing was consumed) only with ``refused=True``."""
    await flushed(app)
    response = await client.get("/api/usage", params={"limit": "1000", **params})
    assert response.status_code == 200, response.text
    rows = list(decode(response)["usage"])
    return rows if refused else [r for r in rows if r["status"] != "refused"]


def usage(url: str, *, refused: bool = False, **params: str) -> list[dict[str, Any]]:
    """A running gateway's ledger over its admin API (``GET /api/usage``), newest first,
    money as exact ``Decimal``; ``params`` filter it (``key_id=`` …); refusals only with
    ``refused=True``."""
    response = httpx.get(f"{url}/api/usage", params={"limit": "1000", **params}, timeout=10)
    response.raise_for_status()
    rows = list(decode(response)["usage"])
    return rows if refused else [r for r in rows if r["status"] != "refused"]


async def metric(client: httpx.AsyncClient, name: str, **labels: str) -> float:
    """The sum of the samples of ``name`` on ``/metrics`` whose labels include ``labels``."""
    text = (await client.get("/metrics")).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total


def scenario(upstream: Served, **fields: Any) -> None:
    """Queue a dev-upstream fault for its next requests (``POST /_dev/scenario``)."""
    httpx.post(f"{upstream.url}/_dev/scenario", json=fields).raise_for_status()


def reached(upstream: Served) -> int:
    """Requests the dev upstream received on ``/v1`` (any answer)."""
    return int(upstream_stats(upstream)["requests"])


def upstream_stats(upstream: Served) -> dict[str, Any]:
    """The dev upstream's counters (``GET /_dev/stats``): ``requests`` and more."""
    response = httpx.get(f"{upstream.url}/_dev/stats")
    response.raise_for_status()
    return dict(response.json())


class LiveServer:
    """A Tollhouse app under a real uvicorn, in a thread, on a free loopback port."""

    def __init__(self, settings: Settings) -> None:
        self.app = create_app(settings)
        # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say TCP, and
        # without it a keep-alive client waits out a delayed ACK (40 ms) per response.
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        # The production configuration (limits, protocol), on the test's own loop.
        config = server_config(
            settings, self.app, loop="asyncio", access_log=False, timeout_graceful_shutdown=5
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.loop: asyncio.AbstractEventLoop | None = None

    def _run(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(self._server.serve(sockets=[self._sock]))

    def __enter__(self) -> LiveServer:
        self._thread.start()
        for _ in range(400):
            if self._server.started:
                return self
            threading.Event().wait(0.025)
        raise TimeoutError("live gateway did not start")

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=15)
        self._sock.close()

    def flush(self) -> None:
        """Write all buffered usage records now (runs on the server's loop)."""
        assert self.loop is not None
        future = asyncio.run_coroutine_threadsafe(self.app.services.recorder.flush(), self.loop)
        future.result(timeout=10)

    def usage(self, **params: str) -> list[dict[str, Any]]:
        """Every usage record so far (flushed first), as ``usage`` reads it."""
        self.flush()
        return usage(self.url, **params)


def wait_for(check: Callable[[], bool], timeout: float = 5.0, what: str = "condition") -> None:
    """Poll ``check`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} not reached within {timeout}s"
        time.sleep(0.02)


async def wait_until(
    check: Callable[[], Awaitable[bool]], within: float = 5.0, what: str = "condition"
) -> float:
    """Await ``check`` until it holds; the seconds that took. Fails naming ``what``."""
    start = time.monotonic()
    while not await check():
        assert time.monotonic() - start < within, f"{what} not reached within {within}s"
        await asyncio.sleep(0.01)
    return time.monotonic() - start
