"""Whole ``tollhouse`` processes on loopback: ``dev-upstream`` and ``serve``, as users run them.

``tollhouse`` builds the environment a user would set (a SQLite file, the SDK variables
pointing at the dev upstream, an empty config file) and starts processes from it; every
process it started is stopped at teardown, and its output is kept in ``tmp_path`` so a
failure can show it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tollhouse.cli.processes import free_port, wait_http_ok

# Variables from the developer's shell that would change what the processes do.
_FOREIGN_PREFIXES = ("TOLLHOUSE_", "OPENAI_", "ANTHROPIC_", "OPENROUTER_")


@dataclass
class Process:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


@dataclass
class Gateway:
    url: str
    process: Process
    database: Path


@dataclass
class Tollhouse:
    """Starts ``python -m tollhouse ...`` processes for one test and stops them after."""

    root: Path
    started: list[Process] = field(default_factory=list)

    def env(self, upstream_url: str | None = None, **extra: str) -> dict[str, str]:
        """The environment of a user running Tollhouse offline against ``upstream_url``."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(_FOREIGN_PREFIXES)}
        config = self.root / "tollhouse.yaml"
        config.write_text("{}\n")
        env.update(
            TOLLHOUSE_DATABASE_URL=f"sqlite+aiosqlite:///{self.root / 'tollhouse.db'}",
            TOLLHOUSE_CONFIG=str(config),
            TOLLHOUSE_LOG_LEVEL="warning",
            TOLLHOUSE_ALLOW_ANONYMOUS="true",
        )
        if upstream_url is not None:
            env.update(
                OPENAI_BASE_URL=f"{upstream_url}/v1",
                OPENAI_API_KEY="sk-e2e-upstream",
                ANTHROPIC_BASE_URL=upstream_url,
                ANTHROPIC_API_KEY="sk-ant-e2e-upstream",
            )
        env.update(extra)
        return env

    @property
    def database(self) -> Path:
        return self.root / "tollhouse.db"

    def start(
        self,
        name: str,
        args: list[str],
        env: dict[str, str],
        ready_url: str,
        command: tuple[str, ...] = (sys.executable, "-m", "tollhouse"),
    ) -> Process:
        """``command args…`` (``python -m tollhouse`` unless told), ready once
        ``ready_url`` answers 200."""
        log = self.root / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [*command, *args],
                env=env,
                cwd=self.root,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        process = Process(name, proc, log)
        self.started.append(process)
        try:
            wait_http_ok(ready_url, timeout_s=30, proc=proc)
        except (RuntimeError, TimeoutError) as exc:
            raise AssertionError(f"{name} did not start: {exc}\n{process.output()}") from None
        return process

    def dev_upstream(self, *flags: str) -> str:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        self.start(
            "dev-upstream",
            ["dev-upstream", "--port", str(port), *flags],
            self.env(),
            url + "/health",
        )
        return url

    def gateway(self, upstream_url: str) -> Gateway:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        process = self.start(
            "gateway", ["serve", "--port", str(port)], self.env(upstream_url), url + "/readyz"
        )
        return Gateway(url, process, self.database)

    def run(self, *args: str, env: dict[str, str] | None = None, timeout: float = 60) -> str:
        """Run one CLI command to completion; its output, or a failure showing it."""
        result = subprocess.run(
            [sys.executable, "-m", "tollhouse", *args],
            env=env if env is not None else self.env(),
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert result.returncode == 0, f"tollhouse {' '.join(args)} failed:\n{result.stderr}"
        return result.stdout

    def stop_all(self) -> None:
        for process in reversed(self.started):
            if process.proc.poll() is None:
                process.proc.send_signal(signal.SIGTERM)
        for process in self.started:
            try:
                process.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.proc.kill()
                process.proc.wait()


@pytest.fixture
def tollhouse(tmp_path: Path) -> Iterator[Tollhouse]:
    runner = Tollhouse(tmp_path)
    try:
        yield runner
    finally:
        runner.stop_all()


@pytest.fixture
def stack(tollhouse: Tollhouse) -> Gateway:
    """A dev upstream and a gateway in front of it, both real processes."""
    return tollhouse.gateway(tollhouse.dev_upstream())
