"""``/healthz``, ``/readyz``, ``/health`` and ``/metrics`` on the in-process app."""

from __future__ import annotations

import socket

import httpx
from prometheus_client.parser import text_string_to_metric_families
from tests.support import running

from tollhouse.app import create_app

HI = [{"role": "user", "content": "hi"}]


async def test_healthz(gateway):
    response = await gateway.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz(gateway):
    response = await gateway.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "usage_records_pending": 0}


async def test_readyz_counts_pending_records(make_settings):
    async with running(make_settings(ledger_flush_interval_ms=60_000)) as (_, client):
        for _ in range(3):
            response = await client.post(
                "/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": HI}
            )
            assert response.status_code == 200
        assert (await client.get("/readyz")).json() == {
            "status": "ready",
            "usage_records_pending": 3,
        }


async def test_readyz_before_start_and_after_stop(make_settings):
    app = create_app(make_settings())
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        before = await client.get("/readyz")
        assert (before.status_code, before.json()) == (503, {"status": "starting"})
        async with app.router.lifespan_context(app):
            assert (await client.get("/readyz")).status_code == 200
        after = await client.get("/readyz")
        assert (after.status_code, after.json()) == (503, {"status": "draining"})
        # Liveness does not depend on readiness.
        assert (await client.get("/healthz")).status_code == 200


async def test_health_names_each_dependency_connected(make_settings, both_deployments):
    # Embedded (SQLite, no Redis), then scaled out (Postgres and a real redis-server).
    async with running(make_settings(**both_deployments)) as (_, client):
        response = await client.get("/health")
    assert response.status_code == 200
    redis = "connected" if both_deployments else "not_configured"
    assert response.json() == {"status": "ok", "database": "connected", "redis": redis}


async def test_health_redis_unreachable_is_503(make_settings, redis_url, redis_server):
    async with running(make_settings(redis_url=redis_url)) as (_, client):
        assert (await client.get("/health")).json()["redis"] == "connected"
        redis_server.stop()  # SIGKILL; the fixture starts it again for the next test
        response = await client.get("/health")
        assert response.status_code == 503
        body = response.json()
        assert body["status"] == "error"
        assert body["database"] == "connected"
        assert body["redis"].startswith("error: ")


async def test_health_database_unreachable_is_503(make_settings):
    # A Postgres URL on a port nobody listens on: the engine is created lazily and
    # auto_migrate is off, so the app starts and /health finds the store unreachable.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    settings = make_settings(
        database_url=f"postgresql+asyncpg://tollhouse@127.0.0.1:{port}/tollhouse",
        auto_migrate=False,
    )
    async with running(settings) as (_, client):
        response = await client.get("/health")
        assert response.status_code == 503
        body = response.json()
        assert body["status"] == "error"
        assert body["database"].startswith("error: ")
        assert body["redis"] == "not_configured"
        # The process is alive though.
        assert (await client.get("/healthz")).status_code == 200


async def test_metrics_exposition_after_a_request(gateway, app):
    response = await gateway.post(
        "/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": HI, "max_tokens": 5}
    )
    assert response.status_code == 200
    await app.services.recorder.flush()
    metrics = await gateway.get("/metrics")
    assert metrics.status_code == 200
    assert metrics.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(metrics.text)}
    for name in (
        "tollhouse_requests",
        "tollhouse_request_duration_seconds",
        "tollhouse_upstream_errors",
        "tollhouse_tokens",
        "tollhouse_cost_nanodollars",
        "tollhouse_unpriced_requests",
        "tollhouse_usage_records_written",
        "tollhouse_usage_write_failures",
        "tollhouse_usage_records_pending",
        "tollhouse_requests_in_flight",
    ):
        assert name in families, name

    def value(name: str, **labels: str) -> float:
        for family in families.values():
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    return float(sample.value)
        raise AssertionError(f"{name} {labels} not exported")

    labels = {"provider": "openai", "model": "gpt-4o-mini"}
    assert value("tollhouse_requests_total", endpoint="chat", status="200", **labels) == 1
    assert value("tollhouse_tokens_total", kind="prompt", **labels) == 4
    assert value("tollhouse_tokens_total", kind="completion", **labels) == 5
    assert value("tollhouse_cost_nanodollars_total", **labels) == 3600
    assert value("tollhouse_request_duration_seconds_count", endpoint="chat") == 1
    assert value("tollhouse_usage_records_written_total") == 1
    assert value("tollhouse_usage_records_pending") == 0
    assert "tollhouse_requests_total{" in metrics.text


async def test_metrics_registry_belongs_to_the_app(make_settings):
    # Two apps in one process never share counters (no module-level collectors).
    async with running(make_settings()) as (_, a), running(make_settings()) as (_, b):
        await a.post("/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": HI})
        assert 'tollhouse_requests_total{endpoint="chat"' in (await a.get("/metrics")).text
        assert 'tollhouse_requests_total{endpoint="chat"' not in (await b.get("/metrics")).text


async def test_in_flight_gauge_counts_requests_being_served(gateway, upstream):
    import asyncio

    def gauge(text: str) -> float:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "tollhouse_requests_in_flight":
                    return float(sample.value)
        raise AssertionError("tollhouse_requests_in_flight not exported")

    async with httpx.AsyncClient(base_url=upstream.url) as dev:
        (await dev.post("/_dev/scenario", json={"latency_ms": 500})).raise_for_status()
        slow = asyncio.create_task(
            gateway.post("/v1/chat/completions", json={"model": "gpt-4o-mini", "messages": HI})
        )
        for _ in range(200):  # wait until the upstream has the request
            if (await dev.get("/_dev/stats")).json()["in_flight"]:
                break
            await asyncio.sleep(0.01)
        else:
            raise AssertionError("the request never reached the upstream")
    during = gauge((await gateway.get("/metrics")).text)
    assert (await slow).status_code == 200
    after = gauge((await gateway.get("/metrics")).text)
    assert (during, after) == (1, 0)
