"""Real Postgres and Redis servers on free loopback ports, for tests, benchmarks and
local runs.

The test fixtures (``tests/postgres_server.py``, ``tests/redis_server.py``),
``scripts/cluster`` and ``benchmarks/replicas.py`` use this to start PostgreSQL (the
``initdb``/``pg_ctl`` binaries on PATH) and ``redis-server`` in a temporary directory,
and to tear everything down at the end. As root, Postgres runs as the ``postgres`` user
(it refuses to run as root). Nothing here is used by the gateway itself, so it lives
outside ``src/`` and is not in the wheel.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path


class DevStackError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _server_user() -> str | None:
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            pwd.getpwnam(name)
            return name
    raise DevStackError("running as root without a postgres or nobody user for Postgres")


def _run_as(user: str | None, *argv: str) -> subprocess.CompletedProcess[str]:
    command = list(argv) if user is None else ["runuser", "-u", user, "--", *argv]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def missing_postgres() -> str | None:
    """Why Postgres cannot be started here, or ``None`` when it can."""
    absent = [b for b in ("initdb", "pg_ctl", "postgres", "psql") if shutil.which(b) is None]
    if absent:
        return f"PostgreSQL binaries not on PATH: {', '.join(absent)}"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser to drop privileges for Postgres"
    return None


@dataclass
class PostgresCluster:
    """One ``initdb``'d data directory and its server on a free port; stop and start it
    at will (outage tests do). ``durable=False`` trades crash safety for speed."""

    base: Path
    durable: bool = True
    port: int = field(default_factory=free_port)
    user: str | None = field(default_factory=_server_user)

    @property
    def data(self) -> Path:
        return self.base / "data"

    def url(self, database: str, driver: str = "postgresql+asyncpg") -> str:
        return f"{driver}://postgres@127.0.0.1:{self.port}/{database}"

    def init(self) -> None:
        reason = missing_postgres()
        if reason:
            raise DevStackError(reason)
        self.base.mkdir(parents=True, exist_ok=True)
        self.base.chmod(0o755)
        if self.user is not None:
            entry = pwd.getpwnam(self.user)
            os.chown(self.base, entry.pw_uid, entry.pw_gid)
        init = _run_as(
            self.user, "initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres",
            "-E", "UTF8", "--locale=C", "--no-sync",
        )  # fmt: skip
        if init.returncode != 0:
            raise DevStackError(f"initdb failed: {init.stdout}{init.stderr}")

    def start(self) -> None:
        # fsync stays off even when durable: a server crash keeps the OS page cache.
        commit = "on" if self.durable else "off"
        options = (
            f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off "
            f"-c synchronous_commit={commit} -c full_page_writes=off -c max_connections=200"
        )
        log = self.base / "postgres.log"
        argv = ["pg_ctl", "-D", str(self.data), "-l", str(log), "-o", options, "-w", "start"]
        started = _run_as(self.user, *argv)
        if started.returncode != 0:
            text = log.read_text() if log.exists() else ""
            raise DevStackError(f"pg_ctl start failed: {started.stderr}\n{text}")

    def stop(self, mode: str = "immediate") -> None:
        _run_as(self.user, "pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def sql(self, statement: str) -> None:
        """One statement on the ``postgres`` database (``CREATE DATABASE …``)."""
        argv = ["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"]
        done = _run_as(self.user, *argv, "-v", "ON_ERROR_STOP=1", "-c", statement)
        if done.returncode != 0:
            raise DevStackError(f"{statement!r} failed: {done.stderr}")

    @property
    def postmaster_pid(self) -> int:
        return int((self.data / "postmaster.pid").read_text().split()[0])


@contextlib.contextmanager
def postgres(base: Path) -> Iterator[PostgresCluster]:
    """A PostgreSQL server with a ``tollhouse`` database, stopped at the end."""
    cluster = PostgresCluster(base)
    cluster.init()
    cluster.start()
    try:
        cluster.sql("CREATE DATABASE tollhouse")
        yield cluster
    finally:
        cluster.stop("fast")


class RedisProcess:
    """A ``redis-server`` without persistence on a free port: a restart comes back empty."""

    def __init__(self, base: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise DevStackError("redis-server not on PATH (apt-get install -y redis-server)")
        self.binary, self.base, self.port = binary, base, free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        argv = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        argv += ["--appendonly", "no", "--dir", str(self.base)]
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise DevStackError("redis-server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        """SIGKILL: nothing is saved, as in a crash."""
        if self.running and self.process is not None:
            self.process.kill()
            self.process.wait(10)
        self.process = None


@dataclass(frozen=True)
class Services:
    database_url: str
    redis_url: str
    pids: tuple[int, ...]  # the Postgres postmaster and redis-server (to pin, to watch)


@contextlib.contextmanager
def services(root: Path | None = None) -> Iterator[Services]:
    """Postgres and Redis together, under ``root`` (a new temporary directory if None)."""
    base = root or Path(tempfile.mkdtemp(prefix="tollhouse-stack-"))
    base.mkdir(parents=True, exist_ok=True)
    base.chmod(0o755)  # Postgres may run as another user: it must reach its directory
    redis = RedisProcess(base / "redis")
    try:
        with postgres(base / "postgres") as cluster:
            redis.start()
            assert redis.process is not None
            pids = (cluster.postmaster_pid, redis.process.pid)
            yield Services(cluster.url("tollhouse"), redis.url, pids)
    finally:
        redis.stop()
        if root is None:
            shutil.rmtree(base, ignore_errors=True)


def run_cluster(replicas: int, worker_args: list[str]) -> int:
    """``scripts/cluster``: the stack and ``replicas`` gateways, until interrupted."""
    import signal
    import sys

    root = Path(tempfile.mkdtemp(prefix="tollhouse-cluster-"))
    root.chmod(0o755)  # Postgres may run as another user below it
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with services(root / "stack") as stack:
            print(f"database  {stack.database_url}\nredis     {stack.redis_url}", flush=True)
            env = {**os.environ, "TOLLHOUSE_DATABASE_URL": stack.database_url}
            env["TOLLHOUSE_REDIS_URL"] = stack.redis_url
            for number in range(replicas):
                port = free_port()
                workdir = root / f"replica-{number}"
                workdir.mkdir()
                argv = [sys.executable, "-m", "tollhouse", "serve", "--port", str(port)]
                env["TOLLHOUSE_SPOOL_DIR"] = str(workdir / "spool")
                procs.append(subprocess.Popen([*argv, *worker_args], env=env, cwd=workdir))
                print(f"replica {number} http://127.0.0.1:{port}", flush=True)
                # One at a time: the first applies the migrations the others find done.
                _wait_ready(port, procs[-1])
            print("ready; Ctrl-C stops everything", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(30)
        shutil.rmtree(root, ignore_errors=True)
    return 0


def _wait_ready(port: int, proc: subprocess.Popen[bytes]) -> None:
    import urllib.request

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DevStackError(f"replica on port {port} exited with {proc.returncode}")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2),
        ):
            return
        time.sleep(0.1)
    raise DevStackError(f"replica on port {port} not ready within 60 s")


if __name__ == "__main__":
    import sys

    count = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 3
    rest = sys.argv[2:] if len(sys.argv) > 1 and sys.argv[1].isdigit() else sys.argv[1:]
    sys.exit(run_cluster(count, rest))
