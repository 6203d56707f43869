"""The OPA engine against the loopback stand-in: what fails, fails as ``EvaluationFailed``
(timeouts, a server that is down, errors, redirects, oversized and null answers), the
data path is checked on write, and the settings that configure it."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import aiohttp
import pytest
from devtools.opa_server import OpaServer

from tollhouse.config import load_settings
from tollhouse.errors import ConfigError
from tollhouse.policies.document import SAMPLES
from tollhouse.policies.engines import EvaluationFailed, PolicyInvalid
from tollhouse.policies.opa import OpaEngine


def no_session() -> aiohttp.ClientSession:
    raise AssertionError("compiling and settings make no request")


def offline() -> OpaEngine:
    return OpaEngine("http://127.0.0.1:1", 1.0, no_session)


async def ask(engine: OpaEngine, path: str) -> bool | None:
    return await engine.compile(path).evaluate_async(engine.prepare(SAMPLES[0]))


async def test_a_slow_opa_fails_within_the_timeout(opa: OpaServer, http: aiohttp.ClientSession):
    engine = OpaEngine(opa.url, 0.2, http)
    started = time.monotonic()
    with pytest.raises(EvaluationFailed, match="within 200 ms"):
        await ask(engine, "_test/sleep/3000")
    assert 0.2 <= time.monotonic() - started < 1.0
    assert await ask(engine, "_test/sleep/0") is True  # the session is still usable


async def test_an_opa_that_is_down_fails(http: aiohttp.ClientSession):
    with socket.socket() as sock:  # a loopback port nothing listens on once closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    engine = OpaEngine(f"http://127.0.0.1:{port}", 1.0, http)
    with pytest.raises(EvaluationFailed, match="unreachable"):
        await ask(engine, "contract/stream/match")


@pytest.mark.parametrize("status", [500, 400, 404, 503])
async def test_an_error_status_fails_naming_it(
    opa: OpaServer, http: aiohttp.ClientSession, status: int
):
    with pytest.raises(EvaluationFailed, match=f"OPA answered {status}.*test status"):
        await ask(OpaEngine(opa.url, 1.0, http), f"_test/status/{status}")


async def test_a_redirect_is_not_followed(opa: OpaServer, http: aiohttp.ClientSession):
    # Followed, it would answer true (the stand-in redirects to a path that does).
    with pytest.raises(EvaluationFailed, match="redirect to /v1/data/_test/sleep/0"):
        await ask(OpaEngine(opa.url, 1.0, http), "_test/redirect")


async def test_an_oversized_answer_fails(opa: OpaServer, http: aiohttp.ClientSession):
    with pytest.raises(EvaluationFailed, match="too big"):
        await ask(OpaEngine(opa.url, 2.0, http), "_test/huge")


async def test_results_that_are_not_booleans_fail(opa: OpaServer, http: aiohttp.ClientSession):
    opa.put_policy("opa_values", 'package opa_values\nnothing := null\nname := "x"\n')
    engine = OpaEngine(opa.url, 1.0, http)
    with pytest.raises(EvaluationFailed, match="null"):
        await ask(engine, "opa_values/nothing")
    with pytest.raises(EvaluationFailed, match='"x"'):
        await ask(engine, "opa_values/name")
    with pytest.raises(EvaluationFailed, match="not a boolean"):
        await ask(engine, "opa_values")  # the package: an object
    assert await ask(engine, "opa_values/missing") is None  # OPA's {}: undefined


async def test_the_session_may_be_given_as_a_callable(opa: OpaServer, http: aiohttp.ClientSession):
    assert await ask(OpaEngine(opa.url + "/", 1.0, lambda: http), "_test/sleep/0") is True


@pytest.mark.parametrize(
    ("source", "path"),
    [
        ("tollhouse/authz/allow", "tollhouse/authz/allow"),
        (" /tollhouse/authz/allow/ ", "tollhouse/authz/allow"),
        ("allow", "allow"),
        ("v1_x/2nd/_private", "v1_x/2nd/_private"),
    ],
)
def test_a_data_path_is_normalised(source: str, path: str):
    condition = offline().compile(source)
    assert condition.path == path and condition.source == source
    assert condition.url == f"http://127.0.0.1:1/v1/data/{path}"


@pytest.mark.parametrize(
    "source", ["tollhouse//allow", "tollhouse.authz.allow", "a b", "x/../y", "é", "a?b=1", "/"]
)
def test_a_bad_data_path_is_refused(source: str):
    with pytest.raises(PolicyInvalid) as info:
        offline().compile(source)
    assert info.value.param == "condition"


def test_a_rule_is_refused_and_evaluation_must_be_awaited():
    engine = offline()
    with pytest.raises(PolicyInvalid) as info:
        engine.compile("tollhouse/authz", "allow")
    assert info.value.param == "rule"
    condition = engine.compile("tollhouse/authz/allow")
    assert condition.is_async
    with pytest.raises(EvaluationFailed, match="external"):
        condition.evaluate(engine.prepare(SAMPLES[0]))


def test_the_settings_configure_the_engine(tmp_path: Path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    settings = load_settings(
        empty, env={}, policy_opa_url="http://127.0.0.1:8181", policy_opa_timeout_ms=150
    )
    engine = OpaEngine.from_settings(settings, no_session)
    assert engine is not None and engine.timeout_s == 0.15
    assert engine.base_url == "http://127.0.0.1:8181"
    assert OpaEngine.from_settings(load_settings(empty, env={}), no_session) is None
    assert load_settings(empty, env={}).policy_opa_timeout_ms == 200


@pytest.mark.parametrize(
    ("env", "field"),
    [
        ({"TOLLHOUSE_POLICY_OPA_URL": "127.0.0.1:8181"}, "policy_opa_url"),
        ({"TOLLHOUSE_POLICY_OPA_URL": "ftp://opa"}, "policy_opa_url"),
        ({"TOLLHOUSE_POLICY_OPA_TIMEOUT_MS": "0"}, "policy_opa_timeout_ms"),
        ({"TOLLHOUSE_POLICY_OPA_TIMEOUT_MS": "60000"}, "policy_opa_timeout_ms"),
    ],
)
def test_bad_settings_are_refused(tmp_path: Path, env: dict[str, str], field: str):
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(ConfigError, match=f"{field}:"):
        load_settings(empty, env=env)
