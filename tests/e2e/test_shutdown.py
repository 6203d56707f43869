"""SIGTERM under load loses nothing: every 200 a client received has its usage record.

The gateway is a real ``tollhouse serve`` process with its SQLite ledger; after the
signal it stops accepting connections, finishes what is in flight, writes every buffered
usage record and exits 0. The ledger is then read straight from the file with ``sqlite3``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field

import aiohttp
import httpx
import orjson
import pytest

from .conftest import Gateway, Tollhouse
from .helpers import sqlite_query

pytestmark = pytest.mark.e2e

TOTAL_REQUESTS = 400
CONNECTIONS = 100
DONE = b"data: [DONE]\n\n"


@dataclass
class LoadResult:
    signalled_at: float = 0.0
    finished: int = 0
    ok: int = 0
    ok_after_signal: int = 0
    failed: int = 0
    errors: dict[str, int] = field(default_factory=dict)


async def _one(
    session: aiohttp.ClientSession, url: str, index: int, stream: bool
) -> tuple[bool, str]:
    body = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": f"request number {index}"}],
        "max_tokens": 8,
        "stream": stream,
    }
    try:
        async with session.post(f"{url}/v1/chat/completions", json=body) as response:
            data = await response.read()
            if response.status != 200:
                return False, f"http {response.status}"
            if stream:
                # Complete only if the stream got to its terminator.
                return data.endswith(DONE), "stream cut"
            reply = orjson.loads(data)
            return reply["usage"]["completion_tokens"] == 8, "no usage"
    except (aiohttp.ClientError, TimeoutError) as exc:
        return False, type(exc).__name__


async def _load_with_sigterm(url: str, pid: int) -> LoadResult:
    """Fire TOTAL_REQUESTS requests; SIGTERM the gateway once a third have finished."""
    result = LoadResult()
    connector = aiohttp.TCPConnector(limit=CONNECTIONS)
    timeout = aiohttp.ClientTimeout(total=60)

    async def tracked(session: aiohttp.ClientSession, index: int) -> None:
        ok, why = await _one(session, url, index, stream=index % 3 == 0)
        result.finished += 1
        if ok:
            result.ok += 1
            if result.signalled_at:
                result.ok_after_signal += 1
        else:
            result.failed += 1
            result.errors[why] = result.errors.get(why, 0) + 1
        if result.finished == TOTAL_REQUESTS // 3:
            os.kill(pid, signal.SIGTERM)
            result.signalled_at = time.monotonic()

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(tracked(session, i) for i in range(TOTAL_REQUESTS)))
    return result


def _exit_code(gateway: Gateway, timeout: float = 30) -> int:
    try:
        return gateway.process.proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError(
            f"gateway still running after SIGTERM\n{gateway.process.output()}"
        ) from None


def test_sigterm_under_load_loses_no_usage_record(tollhouse: Tollhouse) -> None:
    gateway = tollhouse.gateway(tollhouse.dev_upstream("--latency-ms", "20"))

    result = asyncio.run(_load_with_sigterm(gateway.url, gateway.process.proc.pid))
    code = _exit_code(gateway)

    assert result.finished == TOTAL_REQUESTS
    assert result.signalled_at, "SIGTERM was never sent"
    # Requests were really in flight when the signal came, and they were finished.
    assert result.ok_after_signal > 0, result
    (successes,) = sqlite_query(
        gateway.database, "SELECT count(*) FROM usage_records WHERE status = 'success'"
    )[0]
    (records,) = sqlite_query(gateway.database, "SELECT count(*) FROM usage_records")[0]
    assert successes == result.ok, (result, successes)
    assert records >= result.ok
    assert code == 0, f"gateway exited with {code}\n{gateway.process.output()}"


def test_sigterm_lets_an_open_slow_stream_finish(tollhouse: Tollhouse) -> None:
    gateway = tollhouse.gateway(tollhouse.dev_upstream("--chunk-delay-ms", "50"))
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    lines: list[str] = []
    signalled_at = 0.0

    with (
        httpx.Client(timeout=30) as client,
        client.stream(
            "POST", f"{gateway.url}/v1/chat/completions", json={**body, "stream": True}
        ) as response,
    ):
        assert response.status_code == 200
        for line in response.iter_lines():
            if line:
                lines.append(line)
            if len(lines) == 2:  # the role chunk and the first word
                gateway.process.proc.send_signal(signal.SIGTERM)
                signalled_at = time.monotonic()

    assert signalled_at, "the stream never started"
    took = time.monotonic() - signalled_at
    assert lines[-1] == "data: [DONE]"
    words = [orjson.loads(line[6:])["choices"][0]["delta"].get("content") for line in lines[1:-1]]
    assert len([w for w in words if w]) == 16
    assert took > 0.5, "the stream was paced; it cannot have finished at once"
    code = _exit_code(gateway)
    rows = sqlite_query(
        gateway.database,
        "SELECT status, streamed, completion_tokens, cost > 0 FROM usage_records",
    )
    assert rows == [("success", 1, 16, 1)]
    assert code == 0, f"gateway exited with {code}\n{gateway.process.output()}"
