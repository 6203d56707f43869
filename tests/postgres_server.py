"""A real PostgreSQL 15 server for tests: started once per session (per xdist worker).

The server comes from the ``initdb`` and ``pg_ctl`` binaries on PATH, on a free loopback
port, in a temporary directory; each test gets its own database (``pg_url``). As root,
the server runs as the ``postgres`` user (or ``nobody``), because PostgreSQL refuses to
run as root. Without the binaries the tests are skipped with the reason, except in CI
(``CI`` set), where they fail: there, Postgres tests must run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI must run the Postgres tests)")
    pytest.skip(reason)


@dataclass(frozen=True)
class PostgresServer:
    host: str
    port: int
    user: str

    def url(self, database: str, driver: str = "postgresql+asyncpg") -> str:
        return f"{driver}://{self.user}@{self.host}:{self.port}/{database}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run_as(user: str | None, *argv: str) -> subprocess.CompletedProcess[str]:
    command = list(argv) if user is None else ["runuser", "-u", user, "--", *argv]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)


def _server_user() -> str | None:
    """Who runs the server: ourselves, or as root an unprivileged account."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    _unavailable("running as root and no unprivileged user (postgres, nobody) to run Postgres")


@dataclass
class PostgresCluster:
    """One initdb'd data directory and its server, which a test may stop and start."""

    user: str | None
    base: Path
    port: int
    # The shared test server trades durability for speed; an outage test needs commits
    # that survive a crash of the server (the OS keeps its page cache: fsync stays off).
    durable: bool = False

    @property
    def data(self) -> Path:
        return self.base / "data"

    @property
    def server(self) -> PostgresServer:
        return PostgresServer("127.0.0.1", self.port, "postgres")

    def start(self) -> None:
        commit = "on" if self.durable else "off"
        options = (
            f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off "
            f"-c synchronous_commit={commit} -c full_page_writes=off -c max_connections=100"
        )
        log = self.base / "postgres.log"
        argv = ["pg_ctl", "-D", str(self.data), "-l", str(log), "-o", options, "-w", "start"]
        started = _run_as(self.user, *argv)
        if started.returncode != 0:
            text = log.read_text() if log.exists() else ""
            pytest.fail(f"pg_ctl start failed:\n{started.stdout}\n{started.stderr}\n{text}")

    def stop(self, mode: str = "immediate") -> None:
        _run_as(self.user, "pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")


@contextlib.contextmanager
def postgres_cluster(*, durable: bool = False) -> Iterator[PostgresCluster]:
    missing = [b for b in ("initdb", "pg_ctl", "postgres") if shutil.which(b) is None]
    if missing:
        _unavailable(f"PostgreSQL binaries not on PATH: {', '.join(missing)}")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        _unavailable("running as root without runuser to drop privileges for Postgres")
    user = _server_user()
    base = Path(tempfile.mkdtemp(prefix="tollhouse-pg-"))
    base.chmod(0o755)
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(base, entry.pw_uid, entry.pw_gid)
    init = _run_as(
        user, "initdb", "-D", str(base / "data"), "-A", "trust", "-U", "postgres", "-E", "UTF8",
        "--locale=C", "--no-sync",
    )  # fmt: skip
    if init.returncode != 0:
        shutil.rmtree(base, ignore_errors=True)
        pytest.fail(f"initdb failed:\n{init.stdout}\n{init.stderr}")
    cluster = PostgresCluster(user, base, _free_port(), durable)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    with postgres_cluster() as cluster:
        yield cluster.server


@pytest.fixture
def private_postgres() -> Iterator[PostgresCluster]:
    """A Postgres server of this test's own, to stop and start (outage tests)."""
    with postgres_cluster(durable=True) as cluster:
        _admin_sql(cluster.server, 'CREATE DATABASE "tollhouse"')
        yield cluster


def _admin_sql(server: PostgresServer, sql: str) -> None:
    """Run one statement on the ``postgres`` database (in a thread: no loop is assumed)."""
    import asyncpg

    async def run() -> None:
        conn = await asyncpg.connect(
            host=server.host, port=server.port, user=server.user, database="postgres"
        )
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, run()).result(timeout=30)


@pytest.fixture
def pg_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database on the session's server; dropped after the test."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    _admin_sql(postgres_server, f'CREATE DATABASE "{name}"')
    try:
        yield postgres_server.url(name)
    finally:
        _admin_sql(postgres_server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
