"""``tollhouse smoke`` as a deploy pipeline runs it: a process of its own against a real
``tollhouse serve`` (and the dev upstream), then against the same address once the
gateway has stopped. Both answers come well within 30 seconds, process start included."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from typing import Any

import httpx
import pytest

from .conftest import Gateway, Tollhouse
from .helpers import wait_for_records

pytestmark = pytest.mark.e2e


def smoke(tollhouse: Tollhouse, url: str, **env: str) -> tuple[int, dict[str, Any], float]:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "tollhouse", "smoke", "--url", url, "--json"],
        env=tollhouse.env(**env),
        cwd=tollhouse.root,
        capture_output=True,
        text=True,
        timeout=60,
    )
    elapsed = time.monotonic() - started
    assert not result.stderr, result.stderr
    return result.returncode, json.loads(result.stdout), elapsed


def test_smoke_passes_then_fails_when_the_gateway_is_gone(
    tollhouse: Tollhouse, stack: Gateway
) -> None:
    made = httpx.post(f"{stack.url}/api/governance/virtual-keys", json={"name": "deploy-check"})
    assert made.status_code == 201, made.text
    key = made.json()["virtual_key"]["value"]

    code, report, elapsed = smoke(tollhouse, stack.url, TOLLHOUSE_SMOKE_KEY=key)
    assert code == 0, report
    assert report["passed"] is True
    statuses = {check["name"]: check["status"] for check in report["checks"]}
    assert statuses == {"healthz": "pass", "health": "pass", "catalog": "pass", "chat": "pass"}
    assert elapsed < 30
    # The request was served and recorded like any other.
    [record] = wait_for_records(stack.url, 1)
    assert record["key_id"] == made.json()["virtual_key"]["id"]

    stack.process.proc.send_signal(signal.SIGTERM)
    assert stack.process.proc.wait(timeout=30) == 0
    code, report, elapsed = smoke(tollhouse, stack.url, TOLLHOUSE_SMOKE_KEY=key)
    assert code == 1
    assert report["passed"] is False
    assert [check["status"] for check in report["checks"]] == ["fail", "skip", "skip", "skip"]
    assert elapsed < 30
