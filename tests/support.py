"""Helpers the tests share (fixtures live in conftest.py)."""

from __future__ import annotations

import asyncio
import socket
import threading
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette

from tollhouse.app import create_app
from tollhouse.config import Settings
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


async def flushed(app: Starlette) -> None:
    """Wait until every usage record so far is in the database."""
    await app.state.recorder.flush()


class LiveServer:
    """A Tollhouse app under a real uvicorn, in a thread, on a free loopback port."""

    def __init__(self, settings: Settings) -> None:
        self.app = create_app(settings)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
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
        future = asyncio.run_coroutine_threadsafe(self.app.state.recorder.flush(), self.loop)
        future.result(timeout=10)

    def usage(self, **params: str) -> list[dict[str, Any]]:
        self.flush()
        query = {"limit": "1000", **params}
        response = httpx.get(f"{self.url}/api/usage", params=query)
        response.raise_for_status()
        return list(response.json()["usage"])
