"""A real ``redis-server`` on a free loopback port, started and stopped by tests.

``devtools.stack.RedisProcess`` without persistence: a restart comes back empty,
which is what the rebuild tests want. The binary must be on PATH (``scripts/test``
installs it); without it the tests fail rather than skip, because the scaled-out
guarantees are only proven against real Redis.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from devtools.stack import DevStackError, RedisProcess


class RedisServer(RedisProcess):
    def __init__(self, workdir: Path) -> None:
        try:
            super().__init__(workdir)
        except DevStackError as exc:
            pytest.fail(f"{exc}: run the tests with scripts/test")

    def start(self) -> None:
        try:
            super().start()
        except DevStackError as exc:
            pytest.fail(str(exc))

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=5)

    def flush(self) -> None:
        with self.client() as client:
            client.flushall()
