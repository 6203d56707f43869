"""Schemathesis over the admin API's own OpenAPI document (``GET /api/openapi.json``).

One test per documented operation, each with a bounded, reproducible number of
generated requests (``derandomize``: the same cases on every run), valid ones and
schema-violating ones (``GenerationMode.NEGATIVE``), sent to a live gateway that
requires the admin key. Paths with an ``{id}`` get the id of a seeded entity for three
valid cases in four, so they reach the handlers' found branches, not only their 404s.

- ``test_admin_api_never_errs``: no 5xx, and every refusal in the admin error shape;
- ``test_admin_api_conforms``: every check schemathesis has (status codes, content
  types, response schemas and headers, ``Allow`` on 405, valid data accepted, invalid
  data refused, the admin key enforced…).
"""

from __future__ import annotations

import zlib

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import GenerationMode
from schemathesis.core.parameters import ParameterLocation
from tests.fuzz.gateways import ADMIN_KEY, Gateway, admin_call, verdict

from tollhouse.governance.openapi import document

schema = schemathesis.openapi.from_dict(document())
schema.config.generation.update(modes=[GenerationMode.POSITIVE, GenerationMode.NEGATIVE])

FUZZ_SETTINGS = settings(
    max_examples=25,
    derandomize=True,
    deadline=None,
    database=None,
    print_blob=False,
    # The gateway is one per module by design (a fixture shared across examples).
    suppress_health_check=list(HealthCheck),
)


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
    kind = case.path.split("/")[-2]
    pick = zlib.crc32(str(ids["id"]).encode())
    if pick % 4 == 3 or kind not in _FRESH:
        return
    if case.method.upper() == "DELETE":
        made = admin_call(gateway, "POST", f"/api/governance/{kind}", _FRESH[kind])
        ids["id"] = made[_ENVELOPE[kind]]["id"]
    else:
        seeded = gateway.ids[kind]
        ids["id"] = seeded[pick % len(seeded)]


@schema.parametrize()
@FUZZ_SETTINGS
def test_admin_api_never_errs(case, anonymous_gateway):
    with_real_ids(case, anonymous_gateway)
    mark = anonymous_gateway.mark()
    response = case.call(base_url=anonymous_gateway.url)
    problems = verdict(
        anonymous_gateway,
        f"{case.method} {case.formatted_path}",
        case.formatted_path,
        mark,
        response.status_code,
        response.headers.get("content-type", [""])[0],
        response.content,
    )
    assert not problems, "\n".join(problems) + "\n" + case.as_curl_command()


@schema.parametrize()
@FUZZ_SETTINGS
def test_admin_api_conforms(case, anonymous_gateway):
    with_real_ids(case, anonymous_gateway)
    case.call_and_validate(base_url=anonymous_gateway.url)
