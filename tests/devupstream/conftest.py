"""Fixtures: the dev upstream in-process (ASGITransport) and on a real loopback port."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from tollhouse.devupstream import BackgroundServer, DevUpstreamOptions, create_app


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    """A fresh app per test, driven in-process."""
    transport = httpx.ASGITransport(app=create_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://upstream") as c:
        yield c


@pytest.fixture(scope="session")
def _shared_server() -> Iterator[BackgroundServer]:
    with BackgroundServer(DevUpstreamOptions()) as server:
        yield server


@pytest.fixture
def live(_shared_server: BackgroundServer) -> BackgroundServer:
    """The shared real server, with counters and queued scenarios reset."""
    httpx.post(f"{_shared_server.url}/_dev/reset").raise_for_status()
    return _shared_server
