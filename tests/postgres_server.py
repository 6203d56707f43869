"""A real PostgreSQL 15 server for tests: started once per session (per xdist worker).

The server is ``devtools.stack.PostgresCluster`` (``initdb``/``pg_ctl`` from PATH, a
free loopback port, a temporary directory; as root it runs as the ``postgres`` user).
Each test gets its own database (``pg_url``); ``private_postgres`` gives a test a server
of its own to stop and start. Without the binaries the tests are skipped with the
reason, except in CI (``CI`` set), where they fail: there, Postgres tests must run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from devtools.stack import DevStackError, PostgresCluster, missing_postgres


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must run the Postgres tests)")
    pytest.skip(reason)


@contextlib.contextmanager
def postgres_cluster(*, durable: bool = False) -> Iterator[PostgresCluster]:
    reason = missing_postgres()
    if reason:
        _unavailable(reason)
    base = Path(tempfile.mkdtemp(prefix="tollhouse-pg-"))
    try:
        cluster = PostgresCluster(base, durable=durable)
        cluster.init()
        cluster.start()
    except DevStackError as exc:
        shutil.rmtree(base, ignore_errors=True)
        pytest.fail(str(exc))
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresCluster]:
    # The shared server trades crash safety for speed (synchronous_commit off).
    with postgres_cluster(durable=False) as cluster:
        yield cluster


@pytest.fixture
def private_postgres() -> Iterator[PostgresCluster]:
    """A Postgres server of this test's own, to stop and start (outage tests)."""
    with postgres_cluster(durable=True) as cluster:
        cluster.sql('CREATE DATABASE "tollhouse"')
        yield cluster


@pytest.fixture
def pg_url(postgres_server: PostgresCluster) -> Iterator[str]:
    """A fresh, empty database on the session's server; dropped after the test."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    postgres_server.sql(f'CREATE DATABASE "{name}"')
    try:
        yield postgres_server.url(name)
    finally:
        postgres_server.sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
