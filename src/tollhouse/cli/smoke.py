"""``tollhouse smoke``: after a deploy, is the gateway up, priced and serving?

Over HTTP only, against ``--url``, within one total deadline (``--timeout``, 20 s):

- ``healthz``: ``GET /healthz`` answers 200 ``{"status": "ok"}``; when it does not, the
  other checks are skipped (they would fail for the same reason);
- ``health``: ``GET /health`` answers 200 (the database connected, Redis connected or
  not configured). It needs the admin key unless the gateway's ``ops_public`` is set, or
  it has no admin key and this runs on its host: refused without ``--admin-key``, the
  check is skipped; refused with one, it fails;
- ``catalog``: ``GET /catalog/models?routable=true`` answers 200 with a model list;
- ``chat``: with ``--key``, one chat completion of at most 16 tokens answers 200, or 402
  ``budget_exceeded`` / ``insufficient_credits``: the key was known and the request
  priced and refused by its budget or its credits, so the gateway is reachable and
  governed. Anything else fails. Without ``--model``, the cheapest routable chat model
  of the catalog that the key may name (``GET /v1/models``) is asked.

One line per check (name, status, milliseconds, detail), or ``--json``; the exit status
is 1 when a check failed. aiohttp rather than httpx: the gateway already depends on it,
and httpx is only a test dependency.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass
from decimal import Decimal
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp
import click

Status = Literal["pass", "fail", "skip"]

# The key is known and the request was priced, then refused by its budget or its
# prepaid credits: the gateway is reachable and governed.
GOVERNED_402 = frozenset({"budget_exceeded", "insufficient_credits"})
PROMPT = [{"role": "user", "content": "Reply with one word: ok"}]
# Small enough that the worst case reserved for it fits any budget meant for traffic.
MAX_COMPLETION_TOKENS = 16
DEFAULT_TIMEOUT_S = 20.0


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: Status
    ms: int
    detail: str


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: Any  # the JSON (numbers as Decimal), or None when it was not JSON
    text: str
    headers: Mapping[str, str]


def gateway_url(url: str) -> str:
    """The gateway's root: ``http(s)://host[:port]``, a trailing ``/`` or ``/v1`` (an SDK
    base URL) dropped. ``ValueError`` naming the problem otherwise."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"must be an http:// or https:// URL, got {url!r}")
    root = url.strip().rstrip("/")
    return root.removesuffix("/v1")


def problem(answer: Answer) -> str:
    """``<status> <code>: <message>`` from either error shape (admin, OpenAI)."""
    body = answer.body
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code, message = error.get("code"), error.get("message")
    elif isinstance(error, str):
        code, message = body.get("code"), error
    else:
        code, message = None, answer.text
    words = " ".join(str(message or "").split())[:160]
    return f"{answer.status} {code}: {words}" if code else f"{answer.status}: {words}"


def chat_verdict(answer: Answer) -> tuple[Status, str]:
    """What a chat completion's answer says of the gateway."""
    if answer.status == 200:
        target = answer.headers.get("x-tollhouse-target", "?")
        return "pass", f"200 via {target}"
    if answer.status == 402 and error_code(answer) in GOVERNED_402:
        return "pass", f"{problem(answer)} (reachable and governed)"
    return "fail", problem(answer)


def error_code(answer: Answer) -> str | None:
    body = answer.body
    error = body.get("error") if isinstance(body, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    if code is None and isinstance(body, dict):
        code = body.get("code")
    return code if isinstance(code, str) else None


class Smoke:
    """The checks of one run, sharing a session, the deadline and what the catalog said."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        url: str,
        *,
        key: str | None,
        admin_key: str | None,
        model: str | None,
    ) -> None:
        self._session = session
        self._url = url
        self._key = key
        self._admin_key = admin_key
        self._model = model
        self._models: list[dict[str, Any]] = []

    async def _call(
        self, method: str, path: str, token: str | None = None, body: Any = None
    ) -> Answer:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        async with self._session.request(
            method, self._url + path, json=body, headers=headers, allow_redirects=False
        ) as resp:
            text = await resp.text(errors="replace")
            try:
                parsed = json.loads(text, parse_float=Decimal)
            except ValueError:
                parsed = None
            return Answer(resp.status, parsed, text, dict(resp.headers))

    async def healthz(self) -> tuple[Status, str]:
        answer = await self._call("GET", "/healthz")
        if answer.status == 200 and answer.body == {"status": "ok"}:
            return "pass", "ok"
        return "fail", problem(answer)

    async def health(self) -> tuple[Status, str]:
        answer = await self._call("GET", "/health", self._admin_key)
        body = answer.body if isinstance(answer.body, dict) else {}
        states = ", ".join(f"{k} {v}" for k, v in body.items() if k != "status")
        if answer.status == 200:
            return "pass", states
        if answer.status in (401, 403, 421) and not self._admin_key:
            return "skip", "needs the admin key (--admin-key or TOLLHOUSE_ADMIN_KEY)"
        return "fail", states if answer.status == 503 and states else problem(answer)

    async def catalog(self) -> tuple[Status, str]:
        answer = await self._call("GET", "/catalog/models?routable=true")
        data = answer.body.get("data") if isinstance(answer.body, dict) else None
        if answer.status != 200 or not isinstance(data, list):
            return "fail", problem(answer)
        self._models = [m for m in data if isinstance(m, dict)]
        return "pass", f"{len(self._models)} routable models"

    async def chat(self) -> tuple[Status, str]:
        if not self._key:
            return "skip", "no --key: no request sent through the gateway"
        model = self._model or await self._cheapest()
        if model is None:
            return "fail", "no routable chat model in the catalog: name one with --model"
        body = {"model": model, "messages": PROMPT, "max_completion_tokens": MAX_COMPLETION_TOKENS}
        status, detail = chat_verdict(
            await self._call("POST", "/v1/chat/completions", self._key, body)
        )
        return status, f"{model}: {detail}"

    async def _cheapest(self) -> str | None:
        """The cheapest routable chat model of the catalog that the key may name."""
        chat = [m for m in self._models if m.get("mode") == "chat" and isinstance(m.get("id"), str)]
        listed = await self._call("GET", "/v1/models", self._key)
        data = listed.body.get("data") if isinstance(listed.body, dict) else None
        if listed.status == 200 and isinstance(data, list):
            allowed = {m.get("id") for m in data if isinstance(m, dict)}
            chat = [m for m in chat if m["id"] in allowed]

        def cost(model: dict[str, Any]) -> tuple[bool, Decimal, Decimal, str]:
            price = model.get("pricing") or {}
            # Unpriced last: served at cost 0 here, but not free where it runs.
            return (
                not price,
                Decimal(price.get("output", 0)),
                Decimal(price.get("input", 0)),
                model["id"],
            )

        return min(chat, key=cost)["id"] if chat else None


async def run(
    url: str,
    *,
    key: str | None = None,
    admin_key: str | None = None,
    model: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> list[Check]:
    """Every check against the gateway at ``url``, all within ``timeout_s``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    checks: list[Check] = []
    try:
        agent = f"tollhouse-smoke/{version('tollhouse')}"
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        agent = "tollhouse-smoke"
    # The deadline bounds every step (connect, send, read); none of aiohttp's own.
    timeout = aiohttp.ClientTimeout(total=None)
    async with aiohttp.ClientSession(timeout=timeout, headers={"user-agent": agent}) as session:
        smoke = Smoke(session, url, key=key, admin_key=admin_key, model=model)
        steps: list[tuple[str, Callable[[], Awaitable[tuple[Status, str]]]]] = [
            ("healthz", smoke.healthz),
            ("health", smoke.health),
            ("catalog", smoke.catalog),
            ("chat", smoke.chat),
        ]
        for name, step in steps:
            if checks and checks[0].status == "fail":
                checks.append(Check(name, "skip", 0, "not run: /healthz did not pass"))
            elif loop.time() >= deadline:
                checks.append(
                    Check(name, "skip", 0, f"not run: the {timeout_s:g} s deadline passed")
                )
            else:
                checks.append(await _timed(name, step, deadline, timeout_s))
    return checks


async def _timed(
    name: str,
    step: Callable[[], Awaitable[tuple[Status, str]]],
    deadline: float,
    timeout_s: float,
) -> Check:
    start = time.perf_counter()
    status: Status
    try:
        async with asyncio.timeout_at(deadline):
            status, detail = await step()
    except TimeoutError:
        status, detail = "fail", f"no answer within the {timeout_s:g} s deadline"
    except aiohttp.ClientError as exc:
        status, detail = "fail", f"{type(exc).__name__}: {exc}"
    return Check(name, status, round((time.perf_counter() - start) * 1000), detail)


def line(check: Check) -> str:
    return f"{check.name:<8} {check.status:<4} {check.ms:>6} ms  {check.detail}"


@click.command()
@click.option("--url", required=True, help="The gateway's address, e.g. https://gw.example.com.")
@click.option(
    "--key",
    envvar="TOLLHOUSE_SMOKE_KEY",
    default=None,
    help="A virtual key: send one small chat completion with it ($TOLLHOUSE_SMOKE_KEY).",
)
@click.option(
    "--admin-key",
    envvar="TOLLHOUSE_ADMIN_KEY",
    default=None,
    help="The admin key, for /health ($TOLLHOUSE_ADMIN_KEY, the variable the gateway reads).",
)
@click.option("--model", default=None, help="Model to ask (default: the cheapest routable one).")
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(0, 600, min_open=True),
    default=DEFAULT_TIMEOUT_S,
    show_default=True,
    help="Seconds for every check together.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def smoke(
    url: str,
    key: str | None,
    admin_key: str | None,
    model: str | None,
    timeout_s: float,
    as_json: bool,
) -> None:
    """Check a running gateway after a deploy: probes, catalog, one request (exit 1: failed)."""
    try:
        root = gateway_url(url)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--url") from None
    start = time.perf_counter()
    checks = asyncio.run(run(root, key=key, admin_key=admin_key, model=model, timeout_s=timeout_s))
    passed = not any(check.status == "fail" for check in checks)
    if as_json:
        elapsed = round((time.perf_counter() - start) * 1000)
        report = {
            "url": root,
            "passed": passed,
            "ms": elapsed,
            "checks": [asdict(check) for check in checks],
        }
        click.echo(json.dumps(report, indent=2))
    else:
        for check in checks:
            click.echo(line(check))
    if not passed:
        raise SystemExit(1)
