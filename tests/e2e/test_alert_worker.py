"""``tollhouse worker`` delivers what a gateway that does not dispatch put in the outbox.

Real processes: ``tollhouse serve`` with in-process dispatch off, ``tollhouse worker``
beside it on the same SQLite file, and a signed-webhook receiver on loopback (a tiny
stdlib HTTP server in a thread) that checks the signature as a receiver would.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest

from tollhouse.alerts.signing import sign, verify
from tollhouse.cli.processes import free_port

from .conftest import Tollhouse

pytestmark = pytest.mark.e2e

SECRET = "worker-hook-secret"
INBOUND = "inbound-secret-0123456789abcdefghijkl"


class _Hook(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["content-length"]))
        verify(self.headers.get("Tollhouse-Signature"), body, SECRET)
        _Hook.received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return


def test_the_worker_sends_what_the_gateway_queued(tollhouse: Tollhouse) -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Hook.received = []
    try:
        env = tollhouse.env(
            None,
            TOLLHOUSE_SECRET_KEY="e2e-alert-worker-key-0123456789abcdef",
            TOLLHOUSE_INBOUND_WEBHOOK_SECRET=INBOUND,
            TOLLHOUSE_ALERT_DISPATCH_IN_PROCESS="false",
            TOLLHOUSE_ALERT_POLL_INTERVAL_S="0.1",
        )
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        tollhouse.start("gateway", ["serve", "--port", str(port)], env, url + "/readyz")
        hook = f"http://127.0.0.1:{server.server_address[1]}/hook"
        channel = {"name": "h", "type": "webhook", "config": {"url": hook}, "secret": SECRET}
        channel["is_default"] = True
        assert httpx.post(f"{url}/api/notification-channels", json=channel).status_code == 201
        event = {"spend": 100, "max_budget": 100, "event": "budget_crossed"}
        event |= {"event_group": "team", "event_message": "Team crossed its budget"}
        body = json.dumps(event).encode()
        headers = {"Tollhouse-Signature": sign(INBOUND, body)}
        assert (
            httpx.post(f"{url}/api/webhooks/budget", content=body, headers=headers).json()["status"]
            == "stored"
        )
        time.sleep(0.5)
        assert _Hook.received == []  # the gateway does not dispatch

        tollhouse.start("worker", ["worker"], env, url + "/readyz")
        deadline = time.monotonic() + 10
        while not _Hook.received and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(_Hook.received) == 1
        assert _Hook.received[0]["event_message"] == "Team crossed its budget"
    finally:
        server.shutdown()
        server.server_close()
