"""The tools an agent's model may call, and what running one does (docs/agents.md,
*Tools*).

- ``echo`` answers its ``text``: a tool with no effect, for wiring and tests.
- ``http_get`` fetches a URL whose host is in ``agent_http_allow_hosts``, over http or
  https, without following redirects (a redirect could leave the allow-list), within
  ``agent_http_timeout_s`` and at most ``agent_http_max_kb`` of body.
- ``python`` and ``shell`` run their code in the session's sandbox: a local sandbox
  leased from the pool through the broker's ``sandbox.allocate`` choke point (one per
  session, ``agent_sandbox_minutes`` long), under the pool's per-command limits.

The policy decision (``tool.execute``) is the executor's, before any of this runs. A
tool never raises for a failure of its own: it answers a ``Result`` with the error.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiohttp

from tollhouse.config import Settings
from tollhouse.config.agents import names
from tollhouse.errors import TollhouseError
from tollhouse.policies.decide import Who

SANDBOXED = frozenset({"python", "shell"})

SPECS: dict[str, dict[str, Any]] = {
    "echo": {
        "description": "Answer the given text unchanged.",
        "parameters": {
            "type": "object",
            "properties": {"text": {"type": "string"}},
            "required": ["text"],
        },
    },
    "http_get": {
        "description": "Fetch a web page or API over HTTP GET (allow-listed hosts only).",
        "parameters": {
            "type": "object",
            "properties": {"url": {"type": "string", "description": "http:// or https:// URL"}},
            "required": ["url"],
        },
    },
    "python": {
        "description": "Run Python 3 code in a sandbox; answer what it prints.",
        "parameters": {
            "type": "object",
            "properties": {"code": {"type": "string"}},
            "required": ["code"],
        },
    },
    "shell": {
        "description": "Run a POSIX shell command in a sandbox; answer its output.",
        "parameters": {
            "type": "object",
            "properties": {"command": {"type": "string"}},
            "required": ["command"],
        },
    },
}


@dataclass(frozen=True, slots=True)
class Result:
    ok: bool
    output: str = ""
    error: str = ""
    exit_code: int | None = None
    duration_ms: int = 0


def offered(settings: Settings) -> list[dict[str, Any]]:
    """The tools of ``agent_tools``, as a chat request's ``tools``."""
    return [
        {"type": "function", "function": {"name": name, **SPECS[name]}}
        for name in names(settings.agent_tools)
    ]


def hosts(tool: str, arguments: dict[str, Any]) -> list[str]:
    """The hosts a call would reach (the policy document's ``resource.hosts``)."""
    if tool != "http_get":
        return []
    host = urlsplit(str(arguments.get("url", ""))).hostname
    return [host] if host else []


def host_allowed(host: str, allowed: list[str]) -> bool:
    host = host.lower().rstrip(".")
    for entry in allowed:
        entry = entry.lower()
        if host == entry.lstrip(".") or (entry.startswith(".") and host.endswith(entry)):
            return True
    return False


class Leaser(Protocol):
    """What the tools use of the sandbox broker (``sandboxes.broker.Broker``)."""

    async def lease(
        self, who: Who, track_id: str, hours: float | None, purpose: str, *, backend: str
    ) -> Any: ...

    @property
    def pool(self) -> Any: ...


class Toolbox:
    def __init__(self, settings: Settings, broker: Leaser) -> None:
        self._settings = settings
        self._broker = broker
        self._enabled = frozenset(names(settings.agent_tools))
        self._allowed_hosts = names(settings.agent_http_allow_hosts)
        self._http: aiohttp.ClientSession | None = None

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()

    def enabled(self, tool: str) -> bool:
        return tool in self._enabled

    async def run(self, tool: str, arguments: dict[str, Any], session_id: str, who: Who) -> Result:
        started = time.perf_counter()
        try:
            if tool == "echo":
                text = arguments.get("text")
                result = Result(True, text if isinstance(text, str) else json.dumps(arguments))
            elif tool == "http_get":
                result = await self._http_get(arguments)
            elif tool in SANDBOXED:
                result = await self._sandboxed(tool, arguments, session_id, who)
            else:
                result = Result(False, error=f"unknown tool {tool!r}")
        except TollhouseError as exc:  # a lease refused: policy, pool exhausted …
            result = Result(False, error=f"{exc.code}: {exc.message}")
        took = int((time.perf_counter() - started) * 1000)
        return Result(result.ok, result.output, result.error, result.exit_code, took)

    async def _http_get(self, arguments: dict[str, Any]) -> Result:
        url = str(arguments.get("url", ""))
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return Result(False, error="url must be an http:// or https:// URL with a host")
        if not host_allowed(parts.hostname, self._allowed_hosts):
            return Result(False, error=f"host {parts.hostname!r} is not in agent_http_allow_hosts")
        settings = self._settings
        if self._http is None:
            self._http = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=settings.agent_http_timeout_s)
            )
        cap = settings.agent_http_max_kb * 1024
        try:
            async with self._http.get(url, allow_redirects=False) as response:
                status, body = response.status, bytearray()
                async for chunk in response.content.iter_chunked(64 * 1024):
                    body += chunk
                    if len(body) > cap:
                        break  # enough: what is past the cap is not read
        except TimeoutError:
            return Result(False, error=f"no answer within {settings.agent_http_timeout_s:g}s")
        except aiohttp.ClientError as exc:
            return Result(False, error=f"request failed: {exc}")
        cut = len(body) > cap
        text = body[:cap].decode("utf-8", errors="replace")
        note = f"\n[cut at {settings.agent_http_max_kb} KiB]" if cut else ""
        output = f"HTTP {status}\n{text}{note}"
        if status >= 400:
            return Result(False, output, f"HTTP {status}", exit_code=status)
        return Result(True, output, exit_code=status)

    async def _sandboxed(
        self, tool: str, arguments: dict[str, Any], session_id: str, who: Who
    ) -> Result:
        field = "code" if tool == "python" else "command"
        source = arguments.get(field)
        if not isinstance(source, str) or not source:
            return Result(False, error=f"{tool} needs {field!r}: a non-empty string")
        argv = ["python3", "-I", "-c", source] if tool == "python" else ["/bin/sh", "-c", source]
        leased = await self._broker.lease(
            who,
            f"session:{session_id}",
            self._settings.agent_sandbox_minutes / 60,
            "tool",  # the purpose a sandbox.allocate policy sees (docs/policies.md)
            backend="local",
        )
        outcome = await self._broker.pool.execute(leased.row.id, argv)
        output = (outcome.stdout + outcome.stderr).decode("utf-8", errors="replace")
        if outcome.stopped_by is not None:
            return Result(
                False, output, f"stopped by its {outcome.stopped_by} limit", outcome.exit_code
            )
        if outcome.exit_code != 0:
            code = outcome.exit_code
            why = (
                f"exited with {code}" if code is not None else f"killed by signal {outcome.signal}"
            )
            return Result(False, output, why, code)
        return Result(True, output, exit_code=0)
