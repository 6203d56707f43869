"""Shared fixtures: one per real server, settings, and the gateway two ways.

- servers: the dev upstream (``upstream``), Postgres (``pg_url``: a fresh database on the
  session's server; ``private_postgres``: a server of the test's own), Redis
  (``redis_url``), a Kafka-protocol broker (``kafka_bootstrap``: Tansu, for the bus),
  SQLite (``sqlite_url``: a file in ``tmp_path``);
- stores: ``db_url`` runs a test on SQLite, then on Postgres; ``both_stores`` is the same
  as settings overrides, ``engine`` as a migrated engine; ``both_deployments`` runs a
  test embedded (SQLite, counters in memory), then scaled out (Postgres + Redis);
- ``gateway`` — the app in-process through ``httpx.ASGITransport`` (fast; most tests);
- ``live_gateway`` — the same app under a real uvicorn on a free loopback port, for the
  official SDKs, streaming and disconnects;
- ``tests/e2e`` starts whole ``tollhouse`` processes instead;
- Stripe, for top-ups: ``localstripe`` (a localstripe process: customers, PaymentIntents,
  refunds, its own signed webhooks; ``localstripe_url`` is its base URL) and
  ``stripe_checkout`` (``devtools/stripe_checkout.py``: Checkout Sessions and the refund
  and dispute events localstripe lacks), both on loopback, emptied for each test.

Nothing of Tollhouse is mocked: the stand-ins are the upstream provider and Stripe, and
they are real servers (``tollhouse dev-upstream``, localstripe, the Checkout server).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from devtools.localstripe_server import LocalStripe
from devtools.stripe_checkout import CheckoutServer
from sqlalchemy.ext.asyncio import AsyncEngine
from tests.kafka_server import KafkaServer
from tests.postgres_server import pg_url, postgres_server, private_postgres
from tests.redis_server import RedisServer
from tests.support import JSON_WRITES, LiveServer, engine_for, upstream_env

from tollhouse.app import Tollhouse, create_app
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
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite file in the test's ``tmp_path`` (the one ``make_settings`` uses)."""
    return f"sqlite+aiosqlite:///{tmp_path / 'tollhouse.db'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    """The same test on SQLite, then on a fresh database of the session's Postgres."""
    return str(request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url"))


@pytest.fixture
def both_stores(db_url: str) -> dict[str, str]:
    """``make_settings(**both_stores)``: the test on SQLite, then on Postgres."""
    return {"database_url": db_url}


@pytest.fixture(params=["embedded", "postgres+redis"])
def both_deployments(request: pytest.FixtureRequest) -> dict[str, str]:
    """``make_settings(**both_deployments)``: embedded (SQLite, counters in memory), then
    scaled out (Postgres and Redis)."""
    if request.param == "embedded":
        return {}
    return {
        "database_url": str(request.getfixturevalue("pg_url")),
        "redis_url": str(request.getfixturevalue("redis_url")),
    }


@pytest.fixture
async def engine(db_url: str) -> AsyncIterator[AsyncEngine]:
    """A migrated database on SQLite, then on Postgres."""
    async with engine_for(db_url) as engine:
        yield engine


@pytest.fixture
async def sqlite_engine(sqlite_url: str) -> AsyncIterator[AsyncEngine]:
    """The migrated SQLite database alone, for what only SQLite does."""
    async with engine_for(sqlite_url) as engine:
        yield engine


@pytest.fixture
async def pg_engine(pg_url: str) -> AsyncIterator[AsyncEngine]:
    """A migrated fresh Postgres database alone, for what only Postgres does."""
    async with engine_for(pg_url) as engine:
        yield engine


@pytest.fixture
def make_settings(sqlite_url: str, tmp_path: Path, upstream: BackgroundServer) -> SettingsFactory:
    """``make_settings(**overrides)``: settings on a fresh SQLite file and the dev upstream."""

    def factory(**overrides: Any) -> Settings:
        env = {
            "TOLLHOUSE_DATABASE_URL": sqlite_url,
            "TOLLHOUSE_CONFIG": str(tmp_path / "absent.yaml"),
            **upstream_env(upstream.url),
        }
        (tmp_path / "absent.yaml").write_text("{}\n")
        overrides.setdefault("retry_backoff_s", 0.0)
        # Gateway tests run without keys; governance tests turn this off explicitly.
        overrides.setdefault("allow_anonymous", True)
        overrides.setdefault("ledger_flush_interval_ms", 10)
        overrides.setdefault("spool_dir", str(tmp_path / "spool"))
        overrides.setdefault("sandbox_dir", str(tmp_path / "sandboxes"))
        return load_settings(env=env, **overrides)

    return factory


@pytest.fixture
def settings(make_settings: SettingsFactory) -> Settings:
    return make_settings()


@pytest.fixture
async def app(settings: Settings) -> AsyncIterator[Tollhouse]:
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def gateway(app: Tollhouse) -> AsyncIterator[httpx.AsyncClient]:
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


@pytest.fixture(scope="session")
def kafka_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaServer]:
    """One Kafka-protocol broker per test session (per xdist worker)."""
    server = KafkaServer(tmp_path_factory.mktemp("kafka"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def kafka_bootstrap(kafka_server: KafkaServer) -> str:
    """The session's broker (``host:port``); tests keep apart by namespace, not by
    emptying it."""
    if not kafka_server.running:
        kafka_server.start()
    return kafka_server.bootstrap


@pytest.fixture(scope="session")
def localstripe_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStripe]:
    """One localstripe per test session (per xdist worker), its store in a directory of
    the session's own."""
    with LocalStripe(tmp_path_factory.mktemp("localstripe")) as server:
        yield server


@pytest.fixture
def localstripe(localstripe_server: LocalStripe) -> LocalStripe:
    """The session's localstripe, emptied for this test (store, recorded requests, webhook
    endpoints): ``.url``, ``.register_webhook(url, secret)``, ``.requests()``. Its
    webhooks arrive about a second late, so a late one of the test before may too: wait
    for the event of your own object, never count."""
    localstripe_server.reset()
    return localstripe_server


@pytest.fixture
def localstripe_url(localstripe: LocalStripe) -> str:
    """The base URL of an emptied localstripe (``stripe_api_base``)."""
    return localstripe.url


@pytest.fixture(scope="session")
def stripe_checkout_server() -> Iterator[CheckoutServer]:
    with CheckoutServer() as server:
        yield server


@pytest.fixture
def stripe_checkout(stripe_checkout_server: CheckoutServer) -> CheckoutServer:
    """The in-repo Checkout server, emptied for this test: ``.url``,
    ``.register_webhook(url, secret)``, ``.complete(session_id)``, ``.refund(pi)``,
    ``.dispute(pi)``, ``.deliver(event_id, times=N)``, ``.requests()``
    (``devtools/stripe_checkout.py``). Its events are delivered before those calls
    return; they block, so the receiver must not be served by the test's own loop."""
    stripe_checkout_server.reset()
    return stripe_checkout_server
