"""Replicas as real processes on one Postgres and one Redis (docs/deployment.md).

Three ``tollhouse serve`` processes (and, separately, one ``serve --workers 2``) share a
real PostgreSQL and a real ``redis-server``; 300 requests spread over them must hold the
same guarantees as one process: no overspend, a request limit admitted exactly, the
ledger equal to the counters, and every 200 recorded after a SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections import Counter
from decimal import Decimal
from typing import Any

import aiohttp
import httpx
import pytest
from tests.support import usage, wait_for

from tollhouse.cli.processes import free_port

from .conftest import Process, Tollhouse
from .helpers import HELLO

pytestmark = pytest.mark.e2e

MAX_TOKENS = 8
failures: list[str] = []  # bodies of 5xx answers in the last spread(), for assertions


def shared_env(tollhouse: Tollhouse, upstream: str, pg_url: str, redis_url: str) -> dict[str, str]:
    return tollhouse.env(
        upstream,
        TOLLHOUSE_DATABASE_URL=pg_url,
        TOLLHOUSE_REDIS_URL=redis_url,
        TOLLHOUSE_ALLOW_ANONYMOUS="false",
        TOLLHOUSE_GOVERNANCE_POLL_INTERVAL_S="0.2",
    )


def start_replica(tollhouse: Tollhouse, env: dict[str, str], name: str, *flags: str) -> str:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    tollhouse.start(name, ["serve", "--port", str(port), *flags], env, url + "/readyz")
    return url


def admin(url: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(f"{url}/api/governance/{path}", json=body, timeout=10)
    assert response.status_code == 201, response.text
    return dict(json.loads(response.text, parse_float=Decimal))


def entity(url: str, path: str) -> dict[str, Any]:
    response = httpx.get(f"{url}/api/governance/{path}", timeout=10)
    assert response.status_code == 200, response.text
    return dict(json.loads(response.text, parse_float=Decimal))


def known_everywhere(urls: list[str], value: str) -> None:
    """Each replica polls the governance version; wait until all know the new key (and,
    for workers behind one port, until enough fresh connections in a row found it)."""
    streak = 0

    def check() -> bool:
        nonlocal streak
        for url in urls:
            response = httpx.get(f"{url}/v1/models", headers={"authorization": f"Bearer {value}"})
            streak = streak + 1 if response.status_code == 200 else 0
        return streak >= 20

    wait_for(check, timeout=10, what="the key on every replica")


async def spread(urls: list[str], value: str, n: int) -> list[int]:
    body = {"model": "gpt-4o-mini", "messages": HELLO, "max_tokens": MAX_TOKENS}
    headers = {"authorization": f"Bearer {value}"}
    failures.clear()
    connector = aiohttp.TCPConnector(limit=150)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=60)
    ) as session:

        async def one(i: int) -> int:
            url = urls[i % len(urls)] + "/v1/chat/completions"
            async with session.post(url, json=body, headers=headers) as response:
                text = await response.text()
                if response.status >= 500:
                    failures.append(text[:300])
                return response.status

        return list(await asyncio.gather(*(one(i) for i in range(n))))


def counters_match_ledger(urls: list[str], key_id: str) -> None:
    """Once settles and records have landed, every replica shows counters = ledger."""

    def check() -> bool:
        rows = usage(urls[0], key_id=key_id)
        cost = sum((Decimal(r["cost"]) for r in rows), Decimal(0))
        for url in urls:
            key = entity(url, f"virtual-keys/{key_id}")["virtual_key"]
            budget, rate = key.get("budget"), key.get("rate_limit")
            if budget is not None and Decimal(budget["current_usage"]) != cost:
                return False
            if rate is not None and rate["request_current_usage"] != len(rows):
                return False
        return True

    try:
        wait_for(check, timeout=10, what="counters equal to the ledger on every replica")
    except AssertionError:
        rows = usage(urls[0], key_id=key_id)
        views = [entity(url, f"virtual-keys/{key_id}")["virtual_key"] for url in urls]
        raise AssertionError(("ledger", len(rows), "views", views)) from None


def test_three_replicas_hold_budgets_and_limits(tollhouse, pg_url, redis_url):
    upstream = tollhouse.dev_upstream("--latency-ms", "30")
    env = shared_env(tollhouse, upstream, pg_url, redis_url)
    urls = [start_replica(tollhouse, env, f"replica-{i}") for i in range(3)]
    # A budget that admits a handful of worst cases (gpt-4o-mini, 8 output tokens).
    max_limit = Decimal("0.00002")
    small = {"max_limit": float(max_limit), "reset_duration": "1d"}  # JSON: 2e-05, exact
    budgeted = admin(urls[0], "virtual-keys", {"name": "budgeted", "budget": small})
    rate = {"request_max_limit": 20, "request_reset_duration": "1h"}
    limited = admin(urls[1], "virtual-keys", {"name": "limited", "rate_limit": rate})
    for key in (budgeted, limited):
        known_everywhere(urls, key["virtual_key"]["value"])

    by_budget = Counter(asyncio.run(spread(urls, budgeted["virtual_key"]["value"], 300)))
    by_rate = Counter(asyncio.run(spread(urls, limited["virtual_key"]["value"], 300)))

    assert set(by_budget) == {200, 402}, by_budget
    assert by_rate == {200: 20, 429: 280}
    budget_id, rate_id = budgeted["virtual_key"]["id"], limited["virtual_key"]["id"]
    counters_match_ledger(urls, budget_id)
    counters_match_ledger(urls, rate_id)
    rows = usage(urls[2], key_id=budget_id)
    assert len(rows) == by_budget[200]
    assert sum((Decimal(r["cost"]) for r in rows), Decimal(0)) <= max_limit
    assert len(usage(urls[2], key_id=rate_id)) == 20


def test_workers_flag_serves_and_stops_cleanly(tollhouse, pg_url, redis_url):
    upstream = tollhouse.dev_upstream("--latency-ms", "10")
    env = shared_env(tollhouse, upstream, pg_url, redis_url)
    url = start_replica(tollhouse, env, "workers", "--workers", "2")
    key = admin(
        url, "virtual-keys", {"name": "k", "budget": {"max_limit": 10, "reset_duration": "1d"}}
    )
    value = key["virtual_key"]["value"]
    known_everywhere([url], value)

    statuses = Counter(asyncio.run(spread([url], value, 200)))
    assert statuses == {200: 200}, failures
    counters_match_ledger([url], key["virtual_key"]["id"])
    process: Process = tollhouse.started[-1]
    pids = _children(process.proc.pid)
    assert len(pids) == 2, pids
    process.proc.send_signal(signal.SIGTERM)
    assert process.proc.wait(timeout=30) == 0, process.output()
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}/status") or "zombie" in _state(pid)


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as handle:
        return [int(p) for p in handle.read().split()]


def _state(pid: int) -> str:
    with open(f"/proc/{pid}/status") as handle:
        return next(line for line in handle if line.startswith("State:")).lower()


async def _spread_while(urls: list[str], value: str, n: int, action, after: int) -> list[int]:
    """``spread``, running ``action`` (in a thread) once ``after`` requests finished."""
    body = {"model": "gpt-4o-mini", "messages": HELLO, "max_tokens": MAX_TOKENS}
    headers = {"authorization": f"Bearer {value}"}
    finished = 0
    fired: list[asyncio.Task[None]] = []
    connector = aiohttp.TCPConnector(limit=50)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=60)
    ) as session:

        async def one(i: int) -> int:
            nonlocal finished
            url = urls[i % len(urls)] + "/v1/chat/completions"
            try:
                async with session.post(url, json=body, headers=headers) as response:
                    await response.read()
                    status = response.status
            except aiohttp.ClientError:
                status = 0  # the replica was gone: no answer, so nothing to record
            finished += 1
            if finished == after:
                fired.append(asyncio.create_task(asyncio.to_thread(action)))
            return status

        statuses = list(await asyncio.gather(*(one(i) for i in range(n))))
        for task in fired:
            await task
    return statuses


def test_sigterm_a_replica_mid_load_loses_no_record(tollhouse, pg_url, redis_url):
    upstream = tollhouse.dev_upstream("--latency-ms", "20")
    env = shared_env(tollhouse, upstream, pg_url, redis_url)
    urls = [start_replica(tollhouse, env, f"replica-{i}") for i in range(3)]
    key = admin(
        urls[0], "virtual-keys", {"name": "k", "budget": {"max_limit": 10, "reset_duration": "1d"}}
    )
    value, key_id = key["virtual_key"]["value"], key["virtual_key"]["id"]
    known_everywhere(urls, value)
    victim = tollhouse.started[1]  # replica-0 (started[0] is the dev upstream)

    statuses = asyncio.run(
        _spread_while(urls, value, 300, lambda: victim.proc.send_signal(signal.SIGTERM), 100)
    )

    assert victim.proc.wait(timeout=30) == 0, victim.output()
    ok = statuses.count(200)
    assert ok >= 200, Counter(statuses)
    assert set(statuses) <= {200, 0}, Counter(statuses)
    survivors = urls[1:]
    wait_for(
        lambda: len(usage(survivors[0], key_id=key_id)) == ok, timeout=10, what="every 200 recorded"
    )
    counters_match_ledger(survivors, key_id)


@pytest.mark.parametrize("mode", ["closed", "open"])
def test_redis_killed_mid_load_and_restarted_empty(
    tollhouse, pg_url, redis_url, redis_server, mode
):
    upstream = tollhouse.dev_upstream("--latency-ms", "20")
    env = shared_env(tollhouse, upstream, pg_url, redis_url)
    urls = [start_replica(tollhouse, env, f"replica-{i}") for i in range(2)]
    body = {
        "name": "k",
        "on_meter_failure": mode,
        "budget": {"max_limit": 10, "reset_duration": "1d"},
    }
    body["rate_limit"] = {"request_max_limit": 10_000, "request_reset_duration": "1h"}
    key = admin(urls[0], "virtual-keys", body)
    value, key_id = key["virtual_key"]["value"], key["virtual_key"]["id"]
    known_everywhere(urls, value)

    def outage() -> None:
        redis_server.stop()
        time.sleep(0.5)
        redis_server.start()

    statuses = Counter(asyncio.run(_spread_while(urls, value, 300, outage, 60)))

    if mode == "closed":
        assert set(statuses) <= {200, 503} and statuses[503] > 0, statuses
    else:
        assert statuses == {200: 300}, statuses
    wait_for(
        lambda: len(usage(urls[0], key_id=key_id)) == statuses[200],
        timeout=10,
        what="every 200 recorded",
    )
    # Rebuilt from the ledger, fallback usage merged once: counters = ledger on both.
    counters_match_ledger(urls, key_id)


def test_postgres_stopped_mid_load_loses_no_record(tollhouse, private_postgres, redis_url):
    upstream = tollhouse.dev_upstream("--latency-ms", "10")
    database = private_postgres.url("tollhouse")
    env = shared_env(tollhouse, upstream, database, redis_url)
    env["TOLLHOUSE_DATABASE_CONNECT_TIMEOUT_S"] = "1"
    urls = [start_replica(tollhouse, env, f"replica-{i}") for i in range(2)]
    key = admin(
        urls[0], "virtual-keys", {"name": "k", "budget": {"max_limit": 10, "reset_duration": "1d"}}
    )
    value, key_id = key["virtual_key"]["value"], key["virtual_key"]["id"]
    known_everywhere(urls, value)

    def outage() -> None:
        private_postgres.stop()  # immediate: a crash
        wait_for(lambda: _status(urls[0]) == "degraded", timeout=10, what="readyz degraded")
        time.sleep(0.5)
        private_postgres.start()

    statuses = Counter(asyncio.run(_spread_while(urls, value, 300, outage, 50)))

    assert statuses == {200: 300}, statuses
    wait_for(lambda: all(_status(url) == "ready" for url in urls), timeout=20, what="ready")
    wait_for(lambda: len(usage(urls[0], key_id=key_id)) == 300, timeout=20, what="300 records")
    counters_match_ledger(urls, key_id)


def _status(url: str) -> str:
    return str(httpx.get(f"{url}/readyz", timeout=5).json()["status"])
