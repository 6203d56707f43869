"""Fixtures of the fuzz layer (the helpers behind them live in ``gateways.py``)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
from tests.fuzz.gateways import Gateway, running_gateway

from tollhouse.devupstream import BackgroundServer


def _gateway(
    name: str, factory: pytest.TempPathFactory, upstream: BackgroundServer
) -> contextlib.AbstractContextManager[Gateway]:
    root = factory.mktemp(f"fuzz-{name}")
    return running_gateway(name, root, upstream, allow_anonymous=name == "anonymous")


@pytest.fixture(scope="module")
def anonymous_gateway(
    tmp_path_factory: pytest.TempPathFactory, upstream_server: BackgroundServer
) -> Iterator[Gateway]:
    with _gateway("anonymous", tmp_path_factory, upstream_server) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def governed_gateway(
    tmp_path_factory: pytest.TempPathFactory, upstream_server: BackgroundServer
) -> Iterator[Gateway]:
    with _gateway("governed", tmp_path_factory, upstream_server) as gateway:
        yield gateway


@pytest.fixture(scope="module", params=["anonymous", "governed"])
def fuzz_gateway(request: pytest.FixtureRequest) -> Gateway:
    """Each test runs against both configurations."""
    return request.getfixturevalue(f"{request.param}_gateway")
