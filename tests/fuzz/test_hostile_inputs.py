"""The hostile-input corpus (``corpus.py``) against ``/v1/*``, the aliases and the webhook.

Every case runs on both gateways (``anonymous`` and ``governed``, see ``conftest.py``)
and must be answered below 500, every refusal in the documented shape of its path
(``shapes.py``), and nothing logged as an unhandled error. A test sends one group of
cases (one field of one body, with each hostile value…) and names every case that failed.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
from tests.fuzz import corpus
from tests.fuzz.gateways import ADMIN_HEADERS, WEBHOOK_SECRET, Gateway, raw_request, verdict

from tollhouse.alerts.signing import EVENT_ID_HEADER, HEADER, sign

FIELDS = corpus.field_cases()
WEBHOOK_FIELDS = corpus.webhook_field_cases()
CHANNEL_FIELDS = corpus.channel_field_cases()
BROKER = corpus.broker_cases()


def send(gateway: Gateway, case: corpus.Case, *, sign_body: bool = False) -> list[str]:
    headers: list[tuple[str, str | bytes]] = list(case.headers)
    if case.path.startswith(corpus.ALLOCATE):
        headers.append(("authorization", f"Bearer {gateway.broker_token}"))
    elif not case.path.startswith("/api/"):
        if case.keyed:
            headers += gateway.auth.items()
    elif not case.path.startswith(corpus.WEBHOOK):
        headers += ADMIN_HEADERS.items()
    body = case.body
    if body is None and case.path in (corpus.CHAT, corpus.MESSAGES, corpus.EMBEDDINGS):
        body = corpus.large_body(case.path)
    elif body is None and case.path == corpus.WEBHOOK:
        body = json.dumps({**corpus.WEBHOOK_EVENT, "event_message": "x" * corpus.LARGE}).encode()
    if sign_body or case.path == corpus.WEBHOOK:
        headers.append((HEADER, sign(WEBHOOK_SECRET, body or b"")))
    mark = gateway.mark()
    response = raw_request(gateway, case.method, case.path, headers, body)
    if response is None:
        return verdict(gateway, case.id, case.path, mark, None)
    return verdict(
        gateway,
        case.id,
        case.path,
        mark,
        response.status,
        response.content_type,
        response.content,
        case.expect,
    )


def run(gateway: Gateway, cases: list[corpus.Case]) -> None:
    problems = [problem for case in cases for problem in send(gateway, case)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("group", list(FIELDS))
def test_every_field_with_every_hostile_value(fuzz_gateway, group):
    run(fuzz_gateway, FIELDS[group])


@pytest.mark.parametrize("case", corpus.deep_cases(), ids=lambda c: c.id)
def test_deep_nesting(fuzz_gateway, case):
    run(fuzz_gateway, [case])


@pytest.mark.parametrize("case", corpus.body_cases(), ids=lambda c: c.id)
def test_whole_bodies(fuzz_gateway, case):
    run(fuzz_gateway, [case])


@pytest.mark.slow
@pytest.mark.parametrize("case", corpus.large_cases(), ids=lambda c: c.id)
def test_body_over_the_limit_is_413(fuzz_gateway, case):
    if fuzz_gateway.name == "governed" and not case.keyed:
        # Refusing the caller without a key before reading its body is as good.
        case = dataclasses.replace(case, expect=frozenset({401, 413}))
    run(fuzz_gateway, [case])


@pytest.mark.parametrize("group", list(WEBHOOK_FIELDS))
def test_webhook_every_field_with_every_hostile_value(anonymous_gateway, group):
    run(anonymous_gateway, WEBHOOK_FIELDS[group])


@pytest.mark.parametrize("group", list(CHANNEL_FIELDS))
def test_channel_every_field_with_every_hostile_value(anonymous_gateway, group):
    run(anonymous_gateway, CHANNEL_FIELDS[group])


@pytest.mark.parametrize("group", list(BROKER))
def test_broker_every_input_with_every_hostile_value(anonymous_gateway, group):
    run(anonymous_gateway, BROKER[group])


@pytest.mark.parametrize("case", corpus.webhook_body_cases(), ids=lambda c: c.id)
def test_webhook_whole_bodies(anonymous_gateway, case):
    run(anonymous_gateway, [case])


@pytest.mark.parametrize("name", list(corpus.WEBHOOK_SIGNATURES))
def test_webhook_signatures(anonymous_gateway, name):
    value = corpus.WEBHOOK_SIGNATURES[name]
    body = json.dumps(corpus.WEBHOOK_EVENT).encode()
    headers: list[tuple[str, str | bytes]] = [("content-type", "application/json")]
    if value is not None:
        headers.append((HEADER, value))
    headers.append((EVENT_ID_HEADER, f"sig-{name}"))
    mark = anonymous_gateway.mark()
    # Raw bytes: some of these headers are not even valid HTTP (httpx refuses to send them).
    response = raw_request(anonymous_gateway, "POST", corpus.WEBHOOK, headers, body)
    problems = verdict(
        anonymous_gateway,
        f"signature {name}",
        corpus.WEBHOOK,
        mark,
        response and response.status,
        response.content_type if response else "",
        response.content if response else b"",
        frozenset({400, 401}),
    )
    assert not problems, "\n".join(problems)
