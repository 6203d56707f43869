"""A real PostgreSQL 15 server for tests: started once per session (per xdist worker).

The server comes from the ``initdb`` and ``pg_ctl`` binaries on PATH, on a free loopback
port, in a temporary directory; each test gets its own database (``pg_url``). As root,
the server runs as the ``postgres`` user (or ``nobody``), because PostgreSQL refuses to
run as root. Without the binaries the tests are skipped with the reason, except in CI
(``CI`` set), where they fail: there, Postgres tests must run.
"""

from __future__ import annotations

import asyncio
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


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
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
    data, log = base / "data", base / "postgres.log"
    init = _run_as(
        user, "initdb", "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8",
        "--locale=C", "--no-sync",
    )  # fmt: skip
    if init.returncode != 0:
        shutil.rmtree(base, ignore_errors=True)
        pytest.fail(f"initdb failed:\n{init.stdout}\n{init.stderr}")
    port = _free_port()
    options = (
        f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off "
        "-c synchronous_commit=off -c full_page_writes=off -c max_connections=100"
    )
    start = _run_as(user, "pg_ctl", "-D", str(data), "-l", str(log), "-o", options, "-w", "start")
    if start.returncode != 0:
        text = log.read_text() if log.exists() else ""
        shutil.rmtree(base, ignore_errors=True)
        pytest.fail(f"pg_ctl start failed:\n{start.stdout}\n{start.stderr}\n{text}")
    try:
        yield PostgresServer("127.0.0.1", port, "postgres")
    finally:
        _run_as(user, "pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(base, ignore_errors=True)


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
