"""The fuzz layer's gateways: shared by a module, seeded, watched for 500s, sent raw bytes.

The fuzz tests send thousands of requests, so each module shares its gateways (built by
``create_app`` exactly as in production, under a real uvicorn on loopback, each on its
own SQLite file) instead of starting one per test. Two configurations:

- ``anonymous`` — ``allow_anonymous: true``: requests without a key are served;
- ``governed`` — ``allow_anonymous: false`` and a virtual key with an allow-list, a
  budget and a rate limit, sent with every request (``Gateway.auth``).

Both require the admin key (``ADMIN_KEY``) on ``/api/*`` and accept signed budget
webhooks (``WEBHOOK_SECRET``). ``Gateway.errors_since`` returns the tracebacks the app
logged as unhandled errors, so a failing case names the line in ``src/`` that raised.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import socket
import threading
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from devtools.stripe_checkout import CheckoutServer
from tests.credits.stripe_support import SECRET_KEY as STRIPE_SECRET_KEY
from tests.credits.stripe_support import SUCCESS_URL as STRIPE_SUCCESS_URL
from tests.credits.stripe_support import WEBHOOK_SECRET as STRIPE_WEBHOOK_SECRET
from tests.fuzz.shapes import PROTOCOL_REFUSAL, response_problems
from tests.support import LiveServer, upstream_env

from tollhouse.config import Settings, load_settings
from tollhouse.devupstream import BackgroundServer

# The admin key the fuzzed gateways require (>= 32 characters, as production should use).
ADMIN_KEY = "fuzz-admin-key-0123456789abcdefghijklmnop"
ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN_KEY}"}
WEBHOOK_SECRET = "fuzz-inbound-webhook-secret-0123456789"
# Models the governed key may use (the dev upstream serves all of them).
ALLOWED_MODELS = ["gpt-4o-mini", "claude-haiku-4-5", "text-embedding-3-small"]


def fuzz_settings(root: Path, upstream: BackgroundServer, **overrides: Any) -> Settings:
    env = {
        "TOLLHOUSE_DATABASE_URL": f"sqlite+aiosqlite:///{root / 'tollhouse.db'}",
        "TOLLHOUSE_CONFIG": str(root / "absent.yaml"),
        **upstream_env(upstream.url),
    }
    (root / "absent.yaml").write_text("{}\n")
    overrides.setdefault("retry_backoff_s", 0.0)
    overrides.setdefault("max_retries", 0)
    overrides.setdefault("ledger_flush_interval_ms", 10)
    overrides.setdefault("spool_dir", str(root / "spool"))
    overrides.setdefault("sandbox_dir", str(root / "sandboxes"))
    overrides.setdefault("sandbox_track_requests_per_minute", 0)
    overrides.setdefault("admin_key", ADMIN_KEY)
    overrides.setdefault("secret_key", "fuzz-secret-key-0123456789abcdefghijkl")
    overrides.setdefault("inbound_webhook_secret", WEBHOOK_SECRET)
    # schemathesis sends wrong keys on purpose (its ignored-auth check), hundreds of times
    # from one address: the throttle would answer the rest of the run 429.
    overrides.setdefault("admin_failures_per_minute", 1_000_000)
    overrides.setdefault("stripe_secret_key", STRIPE_SECRET_KEY)
    overrides.setdefault("stripe_webhook_secret", STRIPE_WEBHOOK_SECRET)
    overrides.setdefault("stripe_success_url", STRIPE_SUCCESS_URL)
    overrides.setdefault("stripe_max_network_retries", 0)
    return load_settings(env=env, **overrides)


class _ErrorLog(logging.Handler):
    """Keeps every record logged with a traceback (``app._server_error`` logs those)."""

    def __init__(self) -> None:
        super().__init__(level=logging.ERROR)
        self.records: list[logging.LogRecord] = []
        self._lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        if record.exc_info:
            with self._lock:
                self.records.append(record)


@dataclass
class Gateway:
    """One running gateway and what a test needs to talk to it."""

    name: str
    server: LiveServer
    errors: _ErrorLog
    admin: httpx.Client  # keeps its connection: a client per call costs an SSL context
    key: str | None = None  # the virtual key sent on /v1/* (governed only)
    broker_token: str | None = None  # sent on the broker's routes (/v1/allocate…)
    ids: dict[str, list[str]] = field(default_factory=dict)  # seeded entities by kind
    # Seeded entities whose limits are as the schemathesis tests put them back, unchanged
    # since (test_admin_openapi_fuzz.with_real_references).
    restored: set[str] = field(default_factory=set)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"} if self.key else {}

    def mark(self) -> int:
        return len(self.errors.records)

    def errors_since(self, mark: int) -> str:
        """The tracebacks logged since ``mark``, innermost frames last (for messages)."""
        out = []
        for record in self.errors.records[mark:]:
            assert record.exc_info is not None
            exc = record.exc_info[1]
            frames = traceback.extract_tb(record.exc_info[2])
            ours = [f for f in frames if "/tollhouse/" in f.filename] or frames
            # The innermost frames (where it raised), after the outermost of ours below
            # the app's own wrappers (where the request entered).
            inner = [i for i, f in enumerate(ours) if not f.filename.endswith("tollhouse/app.py")]
            picked = sorted({*inner[:1], *range(max(len(ours) - 3, 0), len(ours))})
            shown = [ours[i] for i in picked]
            where = " > ".join(f"{_short(f.filename)}:{f.lineno} ({f.name})" for f in shown)
            out.append(f"{type(exc).__name__}: {str(exc)[:200]} at {where}")
        return "\n".join(out)


def _short(filename: str) -> str:
    return filename[filename.index("src/") :] if "src/" in filename else filename


@contextlib.contextmanager
def running_gateway(
    name: str, root: Path, upstream: BackgroundServer, **overrides: Any
) -> Iterator[Gateway]:
    """A gateway under uvicorn, seeded with customers, teams, keys and channels."""
    errors = _ErrorLog()
    # `app._server_error` logs every unhandled error to "tollhouse", before the 500 goes
    # out; uvicorn logs it again to "uvicorn.error" after. Neither propagates to pytest's
    # handlers while the gateway runs: they would format tracebacks on the server's
    # thread, and Python 3.11's traceback formatting (ast.parse, for the carets) races
    # the main thread's (gh-106905: "AST constructor recursion depth mismatch").
    app_log, server_log = logging.getLogger("tollhouse"), logging.getLogger("uvicorn.error")
    saved = [(logger, logger.propagate) for logger in (app_log, server_log)]
    quiet = logging.NullHandler()  # else logging's last resort prints (and formats) it
    app_log.addHandler(errors)
    server_log.addHandler(quiet)
    for logger, _ in saved:
        logger.propagate = False
    try:
        with (
            CheckoutServer() as stripe,
            LiveServer(
                fuzz_settings(root, upstream, stripe_api_base=stripe.url, **overrides)
            ) as server,
            httpx.Client(base_url=server.url, headers=ADMIN_HEADERS, timeout=30) as admin,
        ):
            gateway = Gateway(name, server, errors, admin)
            seed(gateway)
            yield gateway
    finally:
        app_log.removeHandler(errors)
        server_log.removeHandler(quiet)
        for logger, propagate in saved:
            logger.propagate = propagate


def admin_call(gateway: Gateway, method: str, path: str, body: Any = None) -> Any:
    response = gateway.admin.request(method, path, json=body)
    assert response.status_code in (200, 201), (method, path, response.text)
    return response.json()


BIG_BUDGET = {"max_limit": 1_000_000, "reset_duration": "1d"}
GENEROUS_RATE = {
    "request_max_limit": 1_000_000,
    "request_reset_duration": "1m",
    "token_max_limit": 10_000_000_000,
    "token_reset_duration": "1m",
}


def seed(gateway: Gateway) -> None:
    """Entities for ids to point at; the governed gateway's key is the last one made."""
    api, ids = "/api/governance", gateway.ids
    channel = admin_call(
        gateway,
        "POST",
        "/api/notification-channels",
        {"name": "fuzz", "type": "webhook", "config": {"url": "http://127.0.0.1:9/h"}},
    )
    ids["notification-channels"] = [channel["notification_channel"]["id"]]
    customers = [
        admin_call(gateway, "POST", f"{api}/customers", {"name": f"c{i}", "budget": BIG_BUDGET})
        for i in range(3)
    ]
    ids["customers"] = [c["customer"]["id"] for c in customers]
    teams = [
        admin_call(
            gateway,
            "POST",
            f"{api}/teams",
            {"name": f"t{i}", "customer_id": ids["customers"][i], "budget": BIG_BUDGET},
        )
        for i in range(3)
    ]
    ids["teams"] = [t["team"]["id"] for t in teams]
    keys = [
        admin_call(
            gateway,
            "POST",
            f"{api}/virtual-keys",
            {
                "name": f"k{i}",
                "team_id": ids["teams"][i],
                "allowed_models": ALLOWED_MODELS,
                "budget": BIG_BUDGET,
                "rate_limit": GENEROUS_RATE,
            },
        )
        for i in range(3)
    ]
    ids["virtual-keys"] = [k["virtual_key"]["id"] for k in keys]
    gateway.key = keys[-1]["virtual_key"]["value"] if gateway.name == "governed" else None
    # Prepaid accounts for the customers, with credit enough for the governed key.
    accounts = [
        admin_call(
            gateway,
            "POST",
            "/api/credits/accounts",
            {"owner_type": "customer", "owner_id": customer_id},
        )["account"]["id"]
        for customer_id in ids["customers"]
    ]
    ids["accounts"] = accounts
    # Policies for ids to point at, attached to a tag no key carries: what the fuzz
    # writes must not refuse the other tests' requests (with_real_policies).
    ids["policies"] = [
        admin_call(
            gateway,
            "POST",
            "/api/policies",
            {
                "name": f"fuzz-{i}",
                "action": "llm.request",
                "effect": "deny",
                "condition": "'fuzz-only' in principal.tags",
                "attachments": [{"type": "tag", "tag": "fuzz-only"}],
            },
        )["policy"]["id"]
        for i in range(3)
    ]
    for account_id in accounts:
        admin_call(gateway, "POST", f"/api/credits/accounts/{account_id}/grants", {"amount": 1000})
    # A broker token and a pool for the broker's routes to lease from.
    made = admin_call(gateway, "POST", "/api/broker-tokens", {"name": "fuzz"})
    gateway.broker_token = made["value"]
    ids["sandboxes"] = admin_call(gateway, "POST", "/api/sandboxes/seed", {"count": 3})["created"]


@dataclass
class RawResponse:
    status: int
    headers: http.client.HTTPMessage
    content: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "")


def raw_request(
    gateway: Gateway,
    method: str,
    target: str,
    headers: Any = (),
    body: bytes | None = None,
    *,
    head: bytes | None = None,
    half_close: bool = False,
    timeout: float = 30,
) -> RawResponse | None:
    """Write one request to a socket byte for byte; read the answer (``None``: none came).

    ``head`` replaces the whole request head (request line and headers) when given, for
    framing no client library would produce (a lying ``Content-Length``…);
    ``half_close`` shuts the sending side after the body, as a client that gave up would.
    """
    if head is None:
        lines = [f"{method} {target} HTTP/1.1".encode("latin-1"), b"host: 127.0.0.1"]
        for name, value in headers:
            raw = value if isinstance(value, bytes) else value.encode("latin-1")
            lines.append(name.encode("latin-1") + b": " + raw)
        if body is not None:
            lines.append(b"content-length: " + str(len(body)).encode())
        lines.append(b"connection: close")
        head = b"\r\n".join(lines) + b"\r\n\r\n"
    with socket.create_connection(("127.0.0.1", gateway.server.port), timeout=timeout) as sock:
        # The server may answer (413…) and close before it has read everything.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(head + (body or b""))
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        return read_response(sock, method)


def read_response(sock: socket.socket, method: str) -> RawResponse | None:
    """The answer on ``sock`` (``None``: the server closed, or said nothing in time)."""
    response = http.client.HTTPResponse(sock, method=method)
    try:
        response.begin()
        content = response.read()
    except (http.client.RemoteDisconnected, ConnectionResetError, TimeoutError):
        return None
    return RawResponse(response.status, response.headers, content)


def verdict(
    gateway: Gateway,
    case_id: str,
    path: str,
    mark: int,
    status: int | None,
    content_type: str = "",
    content: bytes = b"",
    expect: frozenset[int] | None = None,
    method: str = "GET",
) -> list[str]:
    """What is wrong with the answer to one case, each line naming the case."""
    problems = []
    if status is None:
        problems.append("no response")
    else:
        problems += response_problems(path, status, content_type, content, method)
        refused_by_protocol = (status, content) == PROTOCOL_REFUSAL
        if expect is not None and status not in expect and not refused_by_protocol:
            problems.append(f"status {status}, expected one of {sorted(expect)}")
    logged = gateway.errors_since(mark)
    if logged:
        problems.append(f"unhandled error logged: {logged}")
    prefix = f"[{gateway.name}] {case_id}"
    return [f"{prefix}: {problem}" for problem in problems]
