"""Real Postgres and Redis servers on free loopback ports, for local runs and benchmarks.

``scripts/cluster`` and ``benchmarks/replicas.py`` use this to start PostgreSQL (the
``initdb``/``pg_ctl`` binaries on PATH) and ``redis-server`` in a temporary directory,
and to tear everything down at the end. As root, Postgres runs as the ``postgres`` user
(it refuses to run as root). Nothing here is used by the gateway itself.
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
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Services:
    database_url: str
    redis_url: str
    pids: tuple[int, ...]  # the Postgres postmaster and redis-server (to pin, to watch)


@contextlib.contextmanager
def postgres(base: Path) -> Iterator[str]:
    """A PostgreSQL server with a ``tollhouse`` database; yields its asyncpg URL."""
    missing = [b for b in ("initdb", "pg_ctl", "postgres", "psql") if shutil.which(b) is None]
    if missing:
        raise DevStackError(f"PostgreSQL binaries not on PATH: {', '.join(missing)}")
    user = _server_user()
    base.mkdir(parents=True, exist_ok=True)
    base.chmod(0o755)
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(base, entry.pw_uid, entry.pw_gid)
    data, log, port = base / "data", base / "postgres.log", free_port()
    init = _run_as(user, "initdb", "-D", str(data), "-A", "trust", "-U", "postgres", "-E", "UTF8")
    if init.returncode != 0:
        raise DevStackError(f"initdb failed: {init.stderr}")
    options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c max_connections=200"
    started = _run_as(user, "pg_ctl", "-D", str(data), "-l", str(log), "-o", options, "-w", "start")
    if started.returncode != 0:
        raise DevStackError(f"pg_ctl start failed: {started.stderr}\n{log.read_text()}")
    try:
        created = _run_as(
            user, "psql", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "-c",
            "CREATE DATABASE tollhouse",
        )  # fmt: skip
        if created.returncode != 0:
            raise DevStackError(f"CREATE DATABASE failed: {created.stderr}")
        yield f"postgresql+asyncpg://postgres@127.0.0.1:{port}/tollhouse"
    finally:
        _run_as(user, "pg_ctl", "-D", str(data), "-m", "fast", "-w", "stop")


@contextlib.contextmanager
def redis(base: Path) -> Iterator[str]:
    """A ``redis-server`` without persistence; yields its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise DevStackError("redis-server not on PATH (apt-get install -y redis-server)")
    base.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    argv += ["--appendonly", "no", "--dir", str(base)]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise DevStackError("redis-server did not start")
            time.sleep(0.02)
        (base / "redis.pid").write_text(str(proc.pid))
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


@contextlib.contextmanager
def services(root: Path | None = None) -> Iterator[Services]:
    """Postgres and Redis together, under ``root`` (a new temporary directory if None)."""
    base = root or Path(tempfile.mkdtemp(prefix="tollhouse-stack-"))
    base.mkdir(parents=True, exist_ok=True)
    base.chmod(0o755)  # Postgres may run as another user: it must reach its directory
    try:
        with postgres(base / "postgres") as database_url, redis(base / "redis") as redis_url:
            postmaster = (base / "postgres" / "data" / "postmaster.pid").read_text().split()[0]
            redis_pid = (base / "redis" / "redis.pid").read_text()
            yield Services(database_url, redis_url, (int(postmaster), int(redis_pid)))
    finally:
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
