"""localstripe on loopback, for the tests of Stripe top-ups.

localstripe (a stateful fake of Stripe's API: customers, PaymentIntents, refunds,
signed webhooks) has a CLI that binds every interface and pickles its store to the fixed
path ``/tmp/localstripe.pickle`` after every write, which parallel runs would share
(``TMPDIR`` does not move it). ``python -m devtools.localstripe_server --state DIR`` runs
its aiohttp app instead:

- on 127.0.0.1 only, on a port it picks and prints (``--port 0``, the default);
- with the store pickled to ``DIR/localstripe.pickle`` (one directory per test session)
  and never loaded from an earlier run;
- with what localstripe lacks and the tests need (``devtools.stripe_wire``): every
  ``/v1`` call is recorded, ``GET /_config/requests`` lists them (``DELETE`` forgets
  them), ``Idempotency-Key`` is honoured as Stripe does (localstripe itself ignores it
  and would create a second PaymentIntent), and ``DELETE /_config/webhooks`` forgets
  the webhook endpoints.

Webhooks are registered with localstripe's own ``POST /_config/webhooks/{id}`` (``url``,
``secret``, optional ``events``); it delivers once, about a second after the event.
``LocalStripe`` starts and stops such a process (``tests/conftest.py`` uses it).
"""

from __future__ import annotations

import argparse
import json
import pickle
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from types import TracebackType

from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent


def _app(state: Path) -> web.Application:
    from localstripe import resources, server, webhooks  # type: ignore[import-untyped]

    from devtools.stripe_wire import RequestLog

    pickle_path = state / "localstripe.pickle"

    def dump_to_disk(self: resources.Store) -> None:
        with pickle_path.open("wb") as f:
            pickle.dump(dict(self), f, protocol=pickle.HIGHEST_PROTOCOL)

    resources.Store.dump_to_disk = dump_to_disk
    resources.Store.try_load_from_disk = lambda self: None

    log = RequestLog()

    async def list_requests(request: web.Request) -> web.Response:
        return web.json_response(log.as_json())

    async def forget_requests(request: web.Request) -> web.Response:
        log.clear()
        return web.Response()

    async def forget_webhooks(request: web.Request) -> web.Response:
        webhooks._webhooks.clear()
        return web.Response()

    app: web.Application = server.app
    app.middlewares.insert(0, log.middleware)
    app.router.add_get("/_config/requests", list_requests)
    app.router.add_delete("/_config/requests", forget_requests)
    app.router.add_delete("/_config/webhooks", forget_webhooks)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--state", type=Path, required=True, help="directory of the pickle")
    args = parser.parse_args(argv)
    args.state.mkdir(parents=True, exist_ok=True)

    app = _app(args.state)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", args.port))
    sock.listen(128)  # connections wait in the backlog until the app serves
    print(sock.getsockname()[1], flush=True)
    web.run_app(app, sock=sock, print=None, access_log=None)


class LocalStripe:
    """A ``localstripe`` process on a loopback port of its own, its store in ``state``."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> LocalStripe:
        self.state.mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "-m", "devtools.localstripe_server", "--state", str(self.state)]
        with (self.state / "localstripe.log").open("wb") as log:
            self.process = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=log)
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        if not line.isdigit():
            self.stop()
            raise RuntimeError(f"localstripe did not start: see {self.state / 'localstripe.log'}")
        self.port = int(line)
        deadline = time.monotonic() + 20
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/_config/requests", timeout=1):
                    return self
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("localstripe did not answer") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()
        self.process = None

    def reset(self) -> None:
        """An empty store, no recorded requests, no webhook endpoints. A webhook of an
        earlier event may still arrive (localstripe sends each a second late)."""
        for path in ("/_config/data", "/_config/requests", "/_config/webhooks"):
            request = urllib.request.Request(f"{self.url}{path}", method="DELETE")
            with urllib.request.urlopen(request, timeout=10):
                pass

    def register_webhook(
        self, url: str, secret: str, *, events: list[str] | None = None, name: str = "tests"
    ) -> None:
        """Deliver events to ``url`` signed with ``secret`` (replaces ``name``'s entry)."""
        form = [("url", url), ("secret", secret)] + [("events[]", e) for e in events or []]
        data = urllib.parse.urlencode(form).encode()
        request = urllib.request.Request(f"{self.url}/_config/webhooks/{name}", data=data)
        with urllib.request.urlopen(request, timeout=10):
            pass

    def requests(self) -> list[dict[str, object]]:
        """The ``/v1`` calls received so far, oldest first."""
        with urllib.request.urlopen(f"{self.url}/_config/requests", timeout=10) as response:
            return list(json.loads(response.read()))

    def __enter__(self) -> LocalStripe:
        return self.start()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


if __name__ == "__main__":
    main()
