"""What the two Stripe stand-ins share: Stripe's wire habits, done the way Stripe does them.

- ``sign``: the ``Stripe-Signature`` header, ``t=<unix>,v1=<hex HMAC-SHA256(secret,
  "<t>.<body>")>``, which the official library's ``stripe.Webhook.construct_event``
  verifies;
- ``unflatten``: the form encoding the official SDKs send (``line_items[0][quantity]=1``,
  ``metadata[k]=v``) back into nested dicts and lists;
- ``RequestLog`` and its aiohttp middleware: every API call is recorded (method, path,
  ``Idempotency-Key``, form fields; never the ``Authorization`` header), and idempotency
  keys are honoured like Stripe's: the same key with the same method, path and
  parameters replays the first answer (``Idempotent-Replayed: true``), with other
  parameters it is a 400 ``idempotency_error``; a refused request (400, 401) or an
  answer marked ``Stripe-Should-Retry: true`` is not kept;
- ``Webhooks``: endpoints registered by id (``url``, ``secret``, optional event types),
  and delivery of one event body to all of them, ``times`` copies at once.

Used by ``devtools.localstripe_server`` (localstripe ignores idempotency keys) and
``devtools.stripe_checkout``; nothing here is shipped.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def sign(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """The ``Stripe-Signature`` header Stripe sends with ``payload``."""
    t = int(time.time()) if timestamp is None else timestamp
    signed = f"{t}.".encode() + payload
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


_PART = re.compile(r"\[([^\[\]]*)\]")


def unflatten(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """``[("a[b][0][c]", "1")]`` -> ``{"a": {"b": [{"c": "1"}]}}``: the official SDKs
    number list items (``expand[0]=x``), so a mapping whose keys are all digits is a list."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        head, bracket, rest = key.partition("[")
        path = [head, *_PART.findall(bracket + rest)]
        node = root
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    return dict(_listify(root))


def _listify(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    if value and all(k.isdigit() for k in value):
        return [_listify(value[k]) for k in sorted(value, key=int)]
    return {k: _listify(v) for k, v in value.items()}


def stripe_error(status: int, message: str, **fields: Any) -> web.Response:
    """Stripe's error envelope: ``{"error": {"type", "message", …}}``."""
    kind = fields.pop("type", "invalid_request_error")
    body = {"error": {"type": kind, "message": message, **fields}}
    return web.json_response(body, status=status)


@dataclass
class Recorded:
    method: str
    path: str
    idempotency_key: str | None
    form: dict[str, Any]
    status: int = 0
    replayed: bool = False

    def as_json(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "idempotency_key": self.idempotency_key,
            "form": self.form,
            "status": self.status,
            "replayed": self.replayed,
        }


@dataclass
class RequestLog:
    """API calls as received, and the answers kept per idempotency key."""

    prefix: str = "/v1/"
    requests: list[Recorded] = field(default_factory=list)
    _answers: dict[str, tuple[str, int, bytes]] = field(default_factory=dict)

    def clear(self) -> None:
        self.requests.clear()
        self._answers.clear()

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not request.path.startswith(self.prefix):
            return await handler(request)
        raw = await request.read()  # aiohttp keeps it: the handler reads it again
        pairs = list((await request.post()).items()) if request.method == "POST" else []
        form = unflatten((k, str(v)) for k, v in pairs)
        key = request.headers.get("Idempotency-Key")
        entry = Recorded(request.method, request.path, key, form)
        self.requests.append(entry)
        if key is not None and request.method == "POST":
            fingerprint = hashlib.sha256(
                f"{request.method} {request.path} ".encode() + raw
            ).hexdigest()
            kept = self._answers.get(key)
            if kept is not None:
                if kept[0] != fingerprint:
                    entry.status = 400
                    return stripe_error(
                        400,
                        "Keys for idempotent requests can only be used with the same "
                        "parameters they were first used with.",
                        type="idempotency_error",
                    )
                entry.status, entry.replayed = kept[1], True
                return web.Response(
                    status=kept[1],
                    body=kept[2],
                    content_type="application/json",
                    headers={"Idempotent-Replayed": "true", "Idempotency-Key": key},
                )
        response = await handler(request)
        entry.status = response.status
        # Stripe keeps an answer once the endpoint started: not for a refused key or a
        # malformed request, which may be sent again with the same key.
        body = getattr(response, "body", None)
        keep = key is not None and request.method == "POST" and response.status not in (400, 401)
        keep = keep and response.headers.get("Stripe-Should-Retry") != "true"
        if keep and key is not None and isinstance(body, bytes):
            self._answers[key] = (fingerprint, response.status, body)
        return response

    def as_json(self) -> list[dict[str, Any]]:
        return [r.as_json() for r in self.requests]


@dataclass
class Endpoint:
    url: str
    secret: str
    events: list[str] | None = None


@dataclass
class Webhooks:
    """Registered endpoints and every delivery made to them (event id -> statuses)."""

    endpoints: dict[str, Endpoint] = field(default_factory=dict)
    deliveries: dict[str, list[int]] = field(default_factory=dict)

    def clear(self) -> None:
        self.endpoints.clear()
        self.deliveries.clear()

    async def deliver(
        self,
        event_id: str,
        event_type: str,
        payload: bytes,
        *,
        times: int = 1,
        timestamp: int | None = None,
    ) -> list[int]:
        """POST ``payload`` to every endpoint that takes ``event_type``, ``times`` copies
        at once (each signed afresh, as Stripe does per attempt); the statuses (0: no
        answer)."""
        targets = [e for e in self.endpoints.values() if e.events is None or event_type in e.events]
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            statuses = await asyncio.gather(
                *(_post(session, e, payload, timestamp) for e in targets for _ in range(times))
            )
        self.deliveries.setdefault(event_id, []).extend(statuses)
        return list(statuses)


async def _post(
    session: aiohttp.ClientSession, endpoint: Endpoint, payload: bytes, timestamp: int | None
) -> int:
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "Stripe-Signature": sign(payload, endpoint.secret, timestamp),
        "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
    }
    try:
        async with session.post(endpoint.url, data=payload, headers=headers) as response:
            await response.read()
            return response.status
    except (aiohttp.ClientError, TimeoutError):
        return 0


def event_body(event: dict[str, Any]) -> bytes:
    """An event as Stripe sends it: pretty JSON (the signature covers these bytes)."""
    return json.dumps(event, indent=2).encode()
