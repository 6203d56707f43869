"""Probes and metrics of a real ``tollhouse serve`` process."""

from __future__ import annotations

from decimal import Decimal

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.support import wait_for

from .conftest import Gateway
from .helpers import HELLO, cost, wait_for_records

pytestmark = pytest.mark.e2e


def test_health_endpoints(stack: Gateway) -> None:
    healthz = httpx.get(f"{stack.url}/healthz")
    assert (healthz.status_code, healthz.json()) == (200, {"status": "ok"})

    readyz = httpx.get(f"{stack.url}/readyz")
    assert readyz.status_code == 200
    assert readyz.json()["status"] == "ready"

    health = httpx.get(f"{stack.url}/health")
    assert health.status_code == 200
    assert health.json() == {
        "status": "ok",
        "database": "connected",
        "redis": "not_configured",
    }


def _samples(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    text = httpx.get(f"{url}/metrics").text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _labels(**labels: str) -> frozenset[tuple[str, str]]:
    return frozenset(labels.items())


def test_metrics_count_requests_tokens_and_cost(stack: Gateway) -> None:
    with openai.OpenAI(base_url=f"{stack.url}/v1", api_key="sk-e2e", max_retries=0) as client:
        replies = [
            client.chat.completions.create(model="gpt-4o-mini", messages=HELLO, max_tokens=n)
            for n in (3, 5)
        ]
        chunks = list(
            client.chat.completions.create(
                model="gpt-4o-mini",
                messages=HELLO,
                max_tokens=7,
                stream=True,
                stream_options={"include_usage": True},
            )
        )
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model="openai/unpriced-model", messages=HELLO)
    usages = [reply.usage for reply in replies] + [chunks[-1].usage]
    prompt = sum(u.prompt_tokens for u in usages if u)
    completion = sum(u.completion_tokens for u in usages if u)
    spent = sum(
        (cost("openai", "gpt-4o-mini", u.prompt_tokens, u.completion_tokens) for u in usages if u),
        Decimal(0),
    )
    wait_for_records(stack.url, 3)

    samples = _samples(stack.url)
    model = {"provider": "openai", "model": "gpt-4o-mini"}
    requests = _labels(endpoint="chat", status="200", **model)
    assert samples[("tollhouse_requests_total", requests)] == 3
    assert samples[("tollhouse_tokens_total", _labels(kind="prompt", **model))] == prompt
    assert samples[("tollhouse_tokens_total", _labels(kind="completion", **model))] == completion
    nanos = samples[("tollhouse_cost_nanodollars_total", _labels(**model))]
    assert Decimal(nanos) == spent * 1_000_000_000
    assert samples[("tollhouse_request_duration_seconds_count", _labels(endpoint="chat"))] == 3

    wait_for(
        lambda: _samples(stack.url)[("tollhouse_usage_records_written_total", frozenset())] == 3,
        what="records written",
    )
