"""Shared fixtures: a real dev upstream on loopback, settings, and the gateway two ways.

- ``gateway`` — the app in-process through ``httpx.ASGITransport`` (fast; most tests);
- ``live_gateway`` — the same app under a real uvicorn on a free loopback port, for the
  official SDKs, streaming and disconnects;
- ``tests/e2e`` starts whole ``tollhouse`` processes instead.

Nothing of Tollhouse is mocked: the only stand-in is the upstream provider, and it is a
real server (``tollhouse dev-upstream``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from tests.postgres_server import pg_url, postgres_server, private_postgres
from tests.redis_server import RedisServer
from tests.support import JSON_WRITES, LiveServer, upstream_env

from tollhouse.app import create_app
from tollhouse.config import Settings, load_settings
from tollhouse.devupstream import BackgroundServer, DevUpstreamOptions

SettingsFactory = Callable[..., Settings]
__all__ = ["pg_url", "postgres_server", "private_postgres"]  # fixtures every test directory may use


@pytest.fixture(scope="session")
def upstream_server() -> Iterator[BackgroundServer]:
    with BackgroundServer(DevUpstreamOptions()) as server:
        yield server


@pytest.fixture
def upstream(upstream_server: BackgroundServer) -> BackgroundServer:
    """The shared dev upstream with its counters and scenarios reset."""
    httpx.post(f"{upstream_server.url}/_dev/reset").raise_for_status()
    return upstream_server


@pytest.fixture
def make_settings(tmp_path: Path, upstream: BackgroundServer) -> SettingsFactory:
    """``make_settings(**overrides)``: settings on a fresh SQLite file and the dev upstream."""

    def factory(**overrides: Any) -> Settings:
        env = {
            "TOLLHOUSE_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'tollhouse.db'}",
            "TOLLHOUSE_CONFIG": str(tmp_path / "absent.yaml"),
            **upstream_env(upstream.url),
        }
        (tmp_path / "absent.yaml").write_text("{}\n")
        overrides.setdefault("retry_backoff_s", 0.0)
        # Gateway tests run without keys; governance tests turn this off explicitly.
        overrides.setdefault("allow_anonymous", True)
        overrides.setdefault("ledger_flush_interval_ms", 10)
        overrides.setdefault("spool_dir", str(tmp_path / "spool"))
        return load_settings(env=env, **overrides)

    return factory


@pytest.fixture
def settings(make_settings: SettingsFactory) -> Settings:
    return make_settings()


@pytest.fixture(params=["sqlite", "postgresql"])
def both_stores(request: pytest.FixtureRequest) -> dict[str, str]:
    """Settings overrides that run a test on SQLite, then again on Postgres."""
    if request.param == "postgresql":
        return {"database_url": str(request.getfixturevalue("pg_url"))}
    return {}


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[Starlette]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def gateway(app: Starlette) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the in-process gateway, as a loopback client (admin API open)."""
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://127.0.0.1", headers=JSON_WRITES
    ) as client:
        yield client


@pytest.fixture
def live_gateway(settings: Settings) -> Iterator[LiveServer]:
    with LiveServer(settings) as server:
        yield server


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One ``redis-server`` per test session (per xdist worker)."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session's Redis, emptied for this test."""
    if not redis_server.running:
        redis_server.start()
    redis_server.flush()
    return redis_server.url
