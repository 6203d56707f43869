"""Schemathesis over the admin API's own OpenAPI document (``GET /api/openapi.json``).

One test per documented operation, reproducible (``derandomize``: the same cases on
every run), valid requests and schema-violating ones (``GenerationMode.NEGATIVE``),
sent to a live gateway that requires the admin key. Paths with an ``{id}`` get the id of
a seeded entity for three valid cases in four, so they reach the handlers' found
branches, not only their 404s; valid cases of ``test_admin_api_conforms`` name seeded
parents and a well-formed cursor (``with_real_references``: what no schema can say).

- ``test_admin_api_conforms``: schemathesis' coverage phase (every keyword of the
  schema at its boundaries and just past them, each undocumented method, missing and
  malformed parameters: some 2,500 deterministic cases over the document) and
  ``FUZZ_EXAMPLES`` generated cases, each held to every check schemathesis has (status
  codes, content types, response schemas and headers, ``Allow`` on 405, valid data
  accepted, invalid data refused, the admin key enforced…) and to ``verdict`` (no 5xx,
  every refusal in the admin error shape, nothing logged as an unhandled error).
  ``POST /api/webhooks/budget`` is sent signed (its credential) and held to the answer
  checks (``ANSWER_CHECKS``);
- ``test_admin_api_never_errs``: ``FUZZ_EXAMPLES`` other generated cases sent as
  generated (made-up parents and cursors, updates on whatever an earlier case left):
  no 5xx, every refusal in the admin error shape, nothing logged.

``FUZZ_EXAMPLES`` (environment, default 10) is the number of generated cases per
operation and test; ``FUZZ_EXAMPLES=500`` is the deep run (docs/testing.md).
"""

from __future__ import annotations

import json
import os
import zlib
from datetime import UTC, datetime
from typing import Any

import schemathesis
from devtools.stripe_wire import sign as stripe_sign
from hypothesis import HealthCheck, Phase, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from tests.credits.stripe_support import WEBHOOK_SECRET as STRIPE_WEBHOOK_SECRET
from tests.fuzz.gateways import (
    ADMIN_KEY,
    BIG_BUDGET,
    GENEROUS_RATE,
    WEBHOOK_SECRET,
    Gateway,
    admin_call,
    verdict,
)

from tollhouse.admin.routes import document
from tollhouse.alerts.signing import sign
from tollhouse.ledger.service import encode_cursor
from tollhouse.web.query import parse_time

JSON_TYPES = (dict, list, str, int, float, bool, type(None))
schema = schemathesis.openapi.from_dict(document())
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])

# Generated cases per operation and test; the coverage phase's cases come on top.
FUZZ_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "10"))
FUZZ_SETTINGS = settings(
    max_examples=FUZZ_EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    print_blob=False,
    # The gateway is one per module by design (a fixture shared across examples).
    suppress_health_check=list(HealthCheck),
)
# Generated cases alone: the coverage phase's (Phase.explicit) are test_admin_api_conforms',
# which holds each to every check this test makes and more.
GENERATED_ONLY = settings(FUZZ_SETTINGS, phases=[Phase.generate, Phase.shrink])


@schema.auth()
class AdminKey:
    """The admin key as schemathesis' own auth, so its auth checks can take it away."""

    def get(self, case, context):
        return ADMIN_KEY

    def set(self, case, data, context):
        case.headers = {**(case.headers or {}), "Authorization": f"Bearer {data}"}


_FRESH = {
    "customers": {"name": "fresh"},
    "teams": {"name": "fresh"},
    "virtual-keys": {"name": "fresh"},
}
_ENVELOPE = {"customers": "customer", "teams": "team", "virtual-keys": "virtual_key"}


def with_real_ids(case, gateway: Gateway) -> None:
    """Three valid cases in four name a real entity (a fresh one for DELETE)."""
    ids = case.path_parameters or {}
    if "id" not in ids or (case.meta and case.meta.is_negative_at(ParameterLocation.PATH)):
        return
    kind = "accounts" if "/credits/accounts/{id}" in case.path else case.path.split("/")[-2]
    if "/policies/{id}" in case.path:
        kind = "policies"
    pick = zlib.crc32(str(ids["id"]).encode())
    if kind in ("accounts", "policies") and pick % 4 != 3:
        ids["id"] = gateway.ids[kind][pick % len(gateway.ids[kind])]
        return
    if pick % 4 == 3 or kind not in _FRESH:
        return
    if case.method.upper() == "DELETE":
        made = admin_call(gateway, "POST", f"/api/governance/{kind}", _FRESH[kind])
        ids["id"] = made[_ENVELOPE[kind]]["id"]
    else:
        seeded = gateway.ids[kind]
        ids["id"] = seeded[pick % len(seeded)]


_PARENTS = {"team_id": "teams", "customer_id": "customers"}


def with_real_references(case, gateway: Gateway) -> None:
    """A valid case names real parents in its body, and a cursor the API could return;
    a valid update merges into the seeded entity's budget and rate limit.

    That a body's ``team_id`` or ``customer_id`` names an existing entity, or that a
    ``cursor`` is one ``/api/usage`` returned, is not something a schema can say: a made-up
    one is a 400 (docs/governance-api.md, docs/ledger.md), which is right, but would count
    as valid data refused. Schema-violating cases keep what was generated (every update
    case starts from the seeded entity's limits, valid or not)."""
    kind, ids = case.path.split("/")[-2], case.path_parameters or {}
    entity = ids.get("id")
    # An update merges into the stored budget and rate limit, which an earlier case may
    # have changed or removed: the document describes an update of an entity that has both
    # (BudgetUpdate, RateLimitUpdate), so the seeded entity gets them back first, unless
    # no case has changed them since they were last put back (``send`` keeps track).
    known = entity in gateway.ids.get(kind, ())
    governed = "/api/governance/" in case.path
    if case.method.upper() == "PUT" and governed and known and entity not in gateway.restored:
        limits = {"budget": BIG_BUDGET, "rate_limit": GENEROUS_RATE}
        admin_call(gateway, "PUT", f"/api/governance/{kind}/{entity}", limits)
        gateway.restored.add(entity)
    if case.meta is None or not case.meta.generation.mode.is_positive:
        return
    if isinstance(case.body, dict):
        for field, kind in _PARENTS.items():
            value = case.body.get(field)
            if isinstance(value, str):
                seeded = gateway.ids[kind]
                pick = zlib.crc32(value.encode("utf-8", "surrogatepass"))
                case.body[field] = seeded[pick % len(seeded)]
    if case.query and case.query.get("cursor"):
        if "/credits/" in case.path:
            case.query["cursor"] = "1000000"  # a journal sequence number
        else:
            case.query["cursor"] = encode_cursor(datetime.now(UTC), "fuzz")
    if isinstance(case.body, dict) and "/credits/" in case.path:
        with_real_credits(case, gateway)
    if isinstance(case.body, dict) and case.path.startswith("/api/policies"):
        with_real_policies(case, gateway)


def with_real_policies(case, gateway: Gateway) -> None:
    """What a policy schema cannot say: that a condition is valid CEL (any string fits the
    schema), that the OPA engine is configured (it is not here), that an attachment names
    an entity that exists. And what the fuzz writes applies to nobody: every policy it
    can create is attached to a tag no key carries, so the other tests' requests pass."""
    body = case.body
    if case.path.endswith("/test"):
        if isinstance(body.get("key_id"), str):
            body["key_id"] = gateway.ids["virtual-keys"][0]
        return
    if "engine" in body:
        body["engine"] = "cel"
    if "condition" in body:
        body["condition"] = (
            "'fuzz-only' in principal.tags" if body["condition"] is not None else None
        )
    if "rule" in body:
        body["rule"] = None
    if "attachments" in body or case.method.upper() == "POST":
        body["attachments"] = [{"type": "tag", "tag": "fuzz-only"}]


_OWNERS = {"customer": "customers", "team": "teams", "key": "virtual-keys"}


def with_real_credits(case, gateway: Gateway) -> None:
    """What a credits schema cannot say: an account's owner exists and has no account
    yet; a grant expires after it takes effect; an update that enables auto top-up has a
    threshold and an amount (given, or stored — the seeded accounts have none)."""
    body = case.body
    if case.path == "/api/credits/accounts" and isinstance(body.get("owner_type"), str):
        kind = _OWNERS.get(body["owner_type"])
        if kind is not None:
            made = admin_call(gateway, "POST", f"/api/governance/{kind}", _FRESH[kind])
            body["owner_id"] = made[_ENVELOPE[kind]]["id"]
    if case.path.endswith("/grants") and isinstance(body.get("expires_at"), str):
        start = body.get("effective_at")
        begins = parse_time(start) if isinstance(start, str) else datetime.now(UTC)
        if parse_time(body["expires_at"]) <= begins:
            body["expires_at"] = None
    auto = body.get("auto_topup")
    if case.method.upper() == "PUT" and isinstance(auto, dict) and auto.get("enabled"):
        auto.setdefault("threshold", 5)
        auto.setdefault("amount", 20)
        if auto["threshold"] is None:
            auto["threshold"] = 5
        if auto["amount"] is None:
            auto["amount"] = 20


WEBHOOK = "/api/webhooks/budget"
STRIPE_WEBHOOK = "/api/webhooks/stripe"
# The budget webhook takes a sender's payload as it comes (an amount may be a number or a
# string of one, within bounds a schema cannot state exactly): its answers are held to
# the document, not its leniency.
ANSWER_CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def signed(case) -> dict[str, Any]:
    """A webhook case sent as bytes signed with the gateway's secret (its only
    credential), so that it reaches the handler: what schemathesis generated, as JSON."""
    if case.path not in (WEBHOOK, STRIPE_WEBHOOK):
        return {}
    raw = json.dumps(case.body).encode() if isinstance(case.body, JSON_TYPES) else b""
    if case.path == STRIPE_WEBHOOK:
        signature = {"Stripe-Signature": stripe_sign(raw, STRIPE_WEBHOOK_SECRET)}
    else:
        signature = {"Tollhouse-Signature": sign(WEBHOOK_SECRET, raw)}
    return {"data": raw, "headers": {**signature, "Content-Type": "application/json"}}


def send(case, gateway: Gateway, *, validate: bool):
    """The case sent, and held to schemathesis' checks if ``validate``.

    An update that was not refused may have changed its entity's limits: the next update
    case of that entity puts them back first (``with_real_references``)."""
    status = None
    try:
        if validate:
            checks = ANSWER_CHECKS if case.path == WEBHOOK else None
            response = case.call_and_validate(base_url=gateway.url, checks=checks, **signed(case))
        else:
            response = case.call(base_url=gateway.url, **signed(case))
        status = response.status_code
        return response
    finally:
        if case.method.upper() == "PUT" and (status is None or not 400 <= status < 500):
            gateway.restored.discard((case.path_parameters or {}).get("id"))


def assert_verdict(case, gateway: Gateway, mark: int, response) -> None:
    """No 5xx, every refusal in the admin error shape, nothing logged as unhandled."""
    problems = verdict(
        gateway,
        f"{case.method} {case.formatted_path}",
        case.formatted_path,
        mark,
        response.status_code,
        response.headers.get("content-type", [""])[0],
        response.content,
        method=case.method.upper(),
    )
    assert not problems, "\n".join(problems) + "\n" + case.as_curl_command()


@schema.parametrize()
@FUZZ_SETTINGS
def test_admin_api_conforms(case, anonymous_gateway):
    with_real_ids(case, anonymous_gateway)
    with_real_references(case, anonymous_gateway)
    mark = anonymous_gateway.mark()
    response = send(case, anonymous_gateway, validate=True)
    assert_verdict(case, anonymous_gateway, mark, response)


@schema.parametrize()
@GENERATED_ONLY
def test_admin_api_never_errs(case, anonymous_gateway):
    with_real_ids(case, anonymous_gateway)
    mark = anonymous_gateway.mark()
    response = send(case, anonymous_gateway, validate=False)
    assert_verdict(case, anonymous_gateway, mark, response)
