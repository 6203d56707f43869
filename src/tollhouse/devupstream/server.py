"""Running the dev upstream: ``serve`` for the CLI, ``BackgroundServer`` for tests.

Both use uvicorn with httptools (and uvloop where it exists) and no access log, because
benchmarks push thousands of requests a second through it and a log line per request
would dominate. Injected disconnects are raised on purpose (see ``InjectedDisconnect``);
a logging filter keeps their tracebacks out of the error log.
"""

from __future__ import annotations

import logging
import socket
import sys
import threading
import time
from types import TracebackType

import uvicorn
from uvicorn.config import LOGGING_CONFIG

from .app import create_app
from .errors import InjectedDisconnect
from .options import DevUpstreamOptions

_LOOP = "asyncio" if sys.platform == "win32" else "uvloop"


class _HideInjectedDisconnects(logging.Filter):
    """Drops uvicorn's "Exception in ASGI application" record for intended drops."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], InjectedDisconnect))


def _install_log_filter() -> None:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _HideInjectedDisconnects) for f in logger.filters):
        logger.addFilter(_HideInjectedDisconnects())


def _config(options: DevUpstreamOptions, host: str, port: int, *, quiet: bool) -> uvicorn.Config:
    return uvicorn.Config(
        create_app(options),
        host=host,
        port=port,
        loop=_LOOP,
        http="httptools",
        lifespan="on",
        access_log=False,
        # Tests run many servers in one process: quiet leaves its logging configuration alone.
        log_config=None if quiet else LOGGING_CONFIG,
        log_level=None if quiet else "info",
        # A stream a client forgot must not hold up shutdown for long.
        timeout_graceful_shutdown=5,
    )


def serve(options: DevUpstreamOptions, host: str = "127.0.0.1", port: int = 9000) -> None:
    """Run the dev upstream in the foreground until SIGINT/SIGTERM.

    ``serve(DevUpstreamOptions(latency_ms=20), port=9000)`` is what
    ``tollhouse dev-upstream --latency-ms 20`` runs.
    """
    config = _config(options, host, port, quiet=False)
    _install_log_filter()
    uvicorn.Server(config).run()


class BackgroundServer:
    """A dev upstream on a free loopback port, in a daemon thread; for test fixtures.

    ::

        with BackgroundServer(DevUpstreamOptions(chunk_delay_ms=5)) as upstream:
            OpenAI(base_url=f"{upstream.url}/v1", api_key="x")

    The socket is bound before the thread starts, so ``url`` is known and connectable
    at once (connections queue in the backlog until uvicorn accepts them).
    """

    def __init__(self, options: DevUpstreamOptions | None = None, host: str = "127.0.0.1") -> None:
        self._socket = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self._socket.bind((host, 0))
        self.host = host
        self.port: int = self._socket.getsockname()[1]
        config = _config(options or DevUpstreamOptions(), host, self.port, quiet=True)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )

    @property
    def url(self) -> str:
        """Base URL without ``/v1`` (what the Anthropic SDK wants; add ``/v1`` for OpenAI)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self, timeout: float = 10.0) -> None:
        _install_log_filter()
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("dev upstream failed to start")
            time.sleep(0.005)

    def stop(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)
        self._socket.close()

    def __enter__(self) -> BackgroundServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
