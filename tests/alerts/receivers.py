"""Real servers on loopback standing in for alert destinations.

``HttpReceiver`` plays a webhook endpoint or Slack: it answers 500 to the first
``fail_first`` requests of each event (by ``Tollhouse-Event-Id``), then 200, and
verifies our signature the way a receiver would
(``alerts.signing.verify`` is the documented algorithm; the tests of signing check it
against a hand-computed HMAC). ``SmtpReceiver`` is aiosmtpd, keeping every message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from decimal import Decimal
from email import message_from_bytes
from email.message import Message
from typing import Any

from aiohttp import web
from aiosmtpd.controller import Controller

from tollhouse.alerts.signing import verify
from tollhouse.cli.processes import free_port


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body, parse_float=Decimal)


@dataclass
class HttpReceiver:
    secret: str | None = None
    fail_first: int = 0
    hang: bool = False
    requests: list[Received] = field(default_factory=list)
    verified: int = 0
    tries: dict[str, int] = field(default_factory=dict)
    port: int = 0
    _runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append(Received(dict(request.headers), body))
        if self.hang:
            import asyncio

            await asyncio.sleep(3600)
        event = request.headers.get("Tollhouse-Event-Id", "")
        self.tries[event] = self.tries.get(event, 0) + 1
        if self.tries[event] <= self.fail_first:
            return web.Response(status=500, text="receiver failing on purpose")
        if self.secret is not None:
            verify(request.headers.get("Tollhouse-Signature"), body, self.secret)
            self.verified += 1
        return web.Response(text="ok")

    async def start(self) -> HttpReceiver:
        app = web.Application()
        app.router.add_post("/hook", self._handle)
        # A short shutdown: a hanging handler must not hold the test for a minute.
        self._runner = web.AppRunner(app, shutdown_timeout=0.2)
        await self._runner.setup()
        self.port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


class _Keep:
    def __init__(self) -> None:
        self.messages: list[Message] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"


class SmtpReceiver:
    """``auth=True``: a server that offers AUTH without TLS (as a careless relay does) and
    records every login it is sent in ``logins`` — a credential that crossed the wire."""

    def __init__(self, *, auth: bool = False) -> None:
        self.handler = _Keep()
        self.port = free_port()
        self.logins: list[tuple[str, str]] = []
        options: dict[str, Any] = {}
        if auth:
            options = {"authenticator": self._login, "auth_require_tls": False}
        # The default 5 s for the server thread to come up is short on a loaded 2-core
        # machine (a setup error seen under the whole suite).
        options["ready_timeout"] = 30
        self.controller = Controller(self.handler, hostname="127.0.0.1", port=self.port, **options)

    def _login(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> Any:
        from aiosmtpd.smtp import AuthResult, LoginPassword

        if isinstance(data, LoginPassword):
            self.logins.append((data.login.decode(), data.password.decode()))
        return AuthResult(success=True)

    @property
    def messages(self) -> list[Message]:
        return self.handler.messages

    def __enter__(self) -> SmtpReceiver:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()
