"""Fixtures of the policy engine tests: the OPA stand-in and a client session for it.

``opa`` is ``devtools/opa_server.py`` running as a process of its own on a free loopback
port (``.url``, ``.put_policy(id, module)``), one per test session (per xdist worker).
Tests load modules under packages of their own and never delete them, so they do not
need it emptied; its ``_test/…`` paths (sleep, status, redirect, huge) are stateless.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
from devtools.opa_server import OpaServer


@pytest.fixture(scope="session")
def opa(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpaServer]:
    with OpaServer(tmp_path_factory.mktemp("opa") / "opa.log") as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A client session on the test's loop, as the app would own one for the engine."""
    async with aiohttp.ClientSession() as session:
        yield session
