"""What the Stripe tests share: settings for a Stripe stand-in, and a webhook endpoint.

``Receiver`` is a webhook endpoint on loopback that keeps every delivery as sent. It runs
on a thread of its own (``http.server``), so the blocking control calls of the Checkout
server, which wait for their deliveries, can be made from a test's event loop. It answers
``status`` (200) and does nothing else: verifying and reading the events is the code under
test (``tollhouse.credits.stripe.verify`` and ``fact_of``).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

import orjson
from pydantic import SecretStr

from tollhouse.config import Settings, load_settings

SECRET_KEY = "sk_test_tollhouse_0123456789abcdefghijklmnopqrstuvwxyz"
WEBHOOK_SECRET = "whsec_tollhouse_0123456789abcdefghijklmnopqrstuvwxyz"
SUCCESS_URL = "https://gateway.example/credits/done?session={CHECKOUT_SESSION_ID}"


def stripe_settings(api_base: str, **overrides: Any) -> Settings:
    """Settings that point ``Payments`` at ``api_base`` (no config file, no environment)."""
    fields: dict[str, Any] = {
        "stripe_secret_key": SECRET_KEY,
        "stripe_webhook_secret": WEBHOOK_SECRET,
        "stripe_api_base": api_base,
        "stripe_success_url": SUCCESS_URL,
        "stripe_max_network_retries": 0,
        **overrides,
    }
    return load_settings(env={"TOLLHOUSE_CONFIG": os.devnull}, **fields)


def webhook_secret(settings: Settings) -> SecretStr:
    assert settings.stripe_webhook_secret is not None
    return settings.stripe_webhook_secret


@dataclass(frozen=True)
class Delivery:
    signature: str | None
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)

    @property
    def type(self) -> str:
        return str(self.json()["type"])


class Receiver:
    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.deliveries: list[Delivery] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver._lock:
                    receiver.deliveries.append(Delivery(self.headers["Stripe-Signature"], body))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, args=(0.02,), daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/webhooks/stripe"

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def of_type(self, kind: str) -> list[Delivery]:
        with self._lock:
            return [d for d in self.deliveries if d.type == kind]

    def wait_for(self, check: Callable[[Delivery], bool], timeout: float = 10.0) -> Delivery:
        """The first delivery ``check`` accepts, waiting up to ``timeout`` seconds for it
        (localstripe sends a webhook about a second after its event)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                found = [d for d in self.deliveries if check(d)]
            if found:
                return found[0]
            assert time.monotonic() < deadline, "no such webhook delivery arrived"
            time.sleep(0.02)
