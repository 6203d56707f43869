"""The admin API's OpenAPI 3.1 document, served at ``GET /api/openapi.json``.

Request bodies come from the Pydantic models in ``schemas`` (so the document cannot
drift from what is accepted); response shapes are written out here, next to one another,
and ``tests/governance/test_admin_openapi.py`` checks every route is described.
"""

from __future__ import annotations

import functools
import re
from importlib.metadata import PackageNotFoundError, version
from typing import Any
from zoneinfo import available_timezones

from pydantic.json_schema import models_json_schema

from tollhouse.governance.schemas import REQUEST_MODELS, ZONE_MARK

_REF = "#/components/schemas/{model}"
STR: dict[str, Any] = {"type": "string"}
TIME: dict[str, Any] = {"type": "string", "format": "date-time"}
NUM: dict[str, Any] = {"type": "number"}
USD: dict[str, Any] = {"type": "number", "description": "USD, exact (never rounded)"}
INT: dict[str, Any] = {"type": "integer"}
BOOL: dict[str, Any] = {"type": "boolean"}
NULL: dict[str, Any] = {"type": "null"}


def ref(name: str) -> dict[str, Any]:
    return {"$ref": _REF.format(model=name)}


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, NULL]}


def obj(
    properties: dict[str, Any], nulls: tuple[str, ...] = (), optional: tuple[str, ...] = ()
) -> dict[str, Any]:
    """An object whose properties are present except ``optional``; ``nulls`` are ``null``
    when unset (an entity's links and lists are never left out: docs/governance-api.md)."""
    return {
        "type": "object",
        "properties": {
            name: nullable(schema) if name in nulls else schema
            for name, schema in properties.items()
        },
        "required": [name for name in properties if name not in optional],
    }


_STAMPS = {"created_at": TIME, "updated_at": TIME}

BUDGET = obj(
    {
        "id": STR,
        "max_limit": USD,
        "reset_duration": STR,
        "calendar_aligned": BOOL,
        "timezone": STR,
        "hard_limit_ratio": NUM,
        "alert_thresholds": {"type": "array", "items": NUM},
        "alert_channels": {
            **nullable({"type": "array", "items": STR}),
            "description": "notification channel ids; null: the default channels",
        },
        "current_usage": {**USD, "description": "spend in the current window (USD)"},
        "last_reset": {**TIME, "description": "start of the current window"},
        **_STAMPS,
    }
)
RATE_LIMIT = obj(
    {
        "id": STR,
        "token_max_limit": INT,
        "token_reset_duration": STR,
        "token_current_usage": INT,
        "token_last_reset": TIME,
        "request_max_limit": INT,
        "request_reset_duration": STR,
        "request_current_usage": INT,
        "request_last_reset": TIME,
        **_STAMPS,
    },
    nulls=(
        "token_max_limit",
        "token_reset_duration",
        "request_max_limit",
        "request_reset_duration",
    ),
)
_LIMIT_IDS = {"budget_id": STR, "rate_limit_id": STR}
_LIMITS = {"budget": ref("Budget"), "rate_limit": ref("RateLimit")}
CUSTOMER_REF = obj(
    {"id": STR, "name": STR, **_LIMIT_IDS, "teams": NULL, "virtual_keys": NULL, **_STAMPS},
    nulls=("budget_id", "rate_limit_id"),
)
_METER_FAILURE = {
    "type": "string",
    "enum": ["open", "closed"],
    "description": "when Redis is unreachable: admit on the replica's local meter (open) "
    "or refuse with 503 (closed); null: the operator's default",
}
TEAM_REF = obj(
    {
        "id": STR,
        "name": STR,
        "customer_id": STR,
        **_LIMIT_IDS,
        "on_meter_failure": _METER_FAILURE,
        "virtual_keys": NULL,
        **_STAMPS,
    },
    nulls=("customer_id", "budget_id", "rate_limit_id", "on_meter_failure"),
)
CUSTOMER = obj(
    {
        "id": STR,
        "name": STR,
        **_LIMIT_IDS,
        **_LIMITS,
        "teams": {"type": "array", "items": ref("TeamRef")},
        "virtual_keys": NULL,
        **_STAMPS,
    },
    nulls=("budget_id", "rate_limit_id", "budget", "rate_limit"),
)
TEAM = obj(
    {
        "id": STR,
        "name": STR,
        "customer_id": STR,
        **_LIMIT_IDS,
        "on_meter_failure": _METER_FAILURE,
        "virtual_keys": NULL,
        "customer": ref("CustomerRef"),
        **_LIMITS,
        **_STAMPS,
    },
    nulls=(
        "customer_id",
        "budget_id",
        "rate_limit_id",
        "on_meter_failure",
        "customer",
        "budget",
        "rate_limit",
    ),
)
_NAMES = nullable({"type": "array", "items": STR})
VIRTUAL_KEY = obj(
    {
        "id": STR,
        "name": STR,
        "description": STR,
        "value": {
            **STR,
            "description": "the key itself in the create response only (shown once); "
            "elsewhere its hint, e.g. th-AbCd…wXyZ",
        },
        "is_active": BOOL,
        "expires_at": nullable(TIME),
        "allowed_models": {**_NAMES, "description": "null: every model"},
        "allowed_providers": {**_NAMES, "description": "null: every provider"},
        "max_parallel_requests": nullable(INT),
        "on_meter_failure": _METER_FAILURE,
        "team_id": STR,
        "customer_id": STR,
        **_LIMIT_IDS,
        "team": ref("TeamRef"),
        "customer": ref("CustomerRef"),
        **_LIMITS,
        **_STAMPS,
    },
    nulls=(
        "description",
        "on_meter_failure",
        "team_id",
        "customer_id",
        "budget_id",
        "rate_limit_id",
        "team",
        "customer",
        "budget",
        "rate_limit",
    ),
)
KEY_USAGE = obj(
    {
        "virtual_key_id": STR,
        "name": STR,
        "tokens_current_usage": nullable(INT),
        "requests_current_usage": nullable(INT),
        "tokens_last_reset": nullable(TIME),
        "requests_last_reset": nullable(TIME),
        "token_max_limit": nullable(INT),
        "request_max_limit": nullable(INT),
        "budget_current_usage": nullable(USD),
        "budget_max_limit": nullable(USD),
        "budget_last_reset": nullable(TIME),
    }
)
ERROR = obj(
    {"error": {**STR, "description": "what went wrong"}, "code": {**STR, "examples": ["not_found"]}}
)
MESSAGE = obj({"message": STR})

RESPONSE_SCHEMAS: dict[str, dict[str, Any]] = {
    "Budget": BUDGET,
    "RateLimit": RATE_LIMIT,
    "CustomerRef": CUSTOMER_REF,
    "TeamRef": TEAM_REF,
    "Customer": CUSTOMER,
    "Team": TEAM,
    "VirtualKey": VIRTUAL_KEY,
    "KeyUsage": KEY_USAGE,
    "Error": ERROR,
    "Message": MESSAGE,
}

_ERRORS = {
    "400": "Invalid JSON, a field that fails validation (wrong type, bad value, an unknown "
    "team_id or customer_id), or a NUL character in the body or a query parameter",
    "401": "Admin key missing or wrong (when TOLLHOUSE_ADMIN_KEY is set)",
    "403": "No admin key is set and the client is not loopback, comes through a proxy or "
    "from another site's page (Origin)",
    "404": "No such entity",
    "405": "The path does not take this method; Allow lists those it does",
    "413": "The request body is larger than max_request_body_bytes",
    "415": "No admin key is set and a POST is not Content-Type: application/json",
    "421": "No admin key is set and Host is not a loopback name",
    "429": "Too many failed admin-key checks from this address this minute "
    "(code too_many_failures)",
}
# What any admin request may be answered, whatever its operation: authentication (the
# admin key, or the keyless loopback rules) and the body-size limit. A 405 needs a method
# the path does not take, so no documented operation is answered one.
_ALWAYS = ("401", "403", "413", "421", "429")


def _json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def reply(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": _json_content(schema)}


def operation(
    summary: str,
    responses: dict[str, Any],
    *,
    body: str | None = None,
    params: list[dict[str, Any]] | None = None,
    errors: tuple[str, ...] = (),
    tag: str = "governance",
) -> dict[str, Any]:
    """One operation; its error answers are ``errors`` and those of every admin request
    (``_ALWAYS``), plus 400 with a body or a query, 415 with a body."""
    op: dict[str, Any] = {"summary": summary, "tags": [tag]}
    if params:
        op["parameters"] = params
    codes = {*errors, *_ALWAYS}
    if body is not None:
        op["requestBody"] = {"required": True, "content": _json_content(ref(body))}
        codes |= {"400", "415"}
    if any(param["in"] == "query" for param in params or ()):
        codes.add("400")
    op["responses"] = {
        **responses,
        **{code: {"$ref": f"#/components/responses/E{code}"} for code in sorted(codes)},
    }
    return op


# Query values and body strings may be anything but a NUL (``web.guard``,
# ``bounds.no_nul``): Postgres text cannot hold one.
NO_NUL = "^[^\\x00]*$"
TEXT: dict[str, Any] = {"type": "string", "pattern": NO_NUL}


def query(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "query", "schema": schema or TEXT, "description": description}


# ``ledger.routes.parse_time``: RFC 3339 (a date alone too; no offset: UTC) or Unix
# seconds; empty: no bound.
MOMENT: dict[str, Any] = {
    "anyOf": [
        {"type": "string", "format": "date-time"},
        {"type": "string", "format": "date"},
        {"type": "string", "pattern": "^[0-9]{1,10}([.][0-9]{0,6})?$"},
        {"type": "string", "maxLength": 0},
    ],
    "examples": ["2026-11-21T10:00:00Z", "2026-11-21", "1795000000"],
}


def count_param(default: int, high: int) -> dict[str, Any]:
    """``query.count``: ASCII digits, from 1 to ``high``."""
    return query(
        "limit",
        f"how many, 1-{high} (default {default})",
        {"type": "integer", "minimum": 1, "maximum": high, "default": default},
    )


_ID = {"name": "id", "in": "path", "required": True, "schema": STR}


def _crud(
    label: str, name: str, schema: str, filters: tuple[str, ...]
) -> tuple[dict[str, Any], dict[str, Any]]:
    plural = f"{name}s"
    single = obj({name: ref(schema)})
    changed = obj({"message": STR, name: ref(schema)})
    collection = {
        "get": operation(
            f"List {plural.replace('_', ' ')}",
            {
                "200": reply(
                    "All of them",
                    obj({plural: {"type": "array", "items": ref(schema)}, "count": INT}),
                )
            },
            params=[query(f, f"only those with this {f}") for f in filters],
        ),
        "post": operation(
            f"Create a {label.lower()}",
            {"201": reply(f"{label} created successfully", changed)},
            body=f"{schema}Create",
        ),
    }
    item = {
        "get": operation(
            f"Get a {label.lower()}",
            {"200": reply("Found", single)},
            params=[_ID],
            errors=("404",),
        ),
        "put": operation(
            f"Update a {label.lower()} (merge: fields left out are unchanged)",
            {"200": reply(f"{label} updated successfully", changed)},
            body=f"{schema}Update",
            params=[_ID],
            errors=("404",),
        ),
        "delete": operation(
            f"Delete a {label.lower()}",
            {"200": reply(f"{label} deleted successfully", ref("Message"))},
            params=[_ID],
            errors=("404",),
        ),
    }
    return collection, item


def _paths() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for label, name, schema, path, filters in (
        ("Customer", "customer", "Customer", "customers", ()),
        ("Team", "team", "Team", "teams", ("customer_id",)),
        ("Virtual key", "virtual_key", "VirtualKey", "virtual-keys", ("team_id", "customer_id")),
    ):
        collection, item = _crud(label, name, schema, filters)
        paths[f"/api/governance/{path}"] = collection
        paths[f"/api/governance/{path}/{{id}}"] = item
    stamp = {"timestamp": TIME}
    paths["/api/governance/usage-stats"] = {
        "get": operation(
            "Budget spend and rate-limit counters per virtual key",
            {
                "200": reply(
                    "Every key, or the one asked for",
                    {
                        "oneOf": [
                            obj({"usage_stats": {"type": "array", "items": ref("KeyUsage")}}),
                            obj({"virtual_key_id": STR, "usage_stats": ref("KeyUsage")}),
                        ]
                    },
                )
            },
            params=[query("virtual_key_id", "only this key")],
            errors=("404",),
        )
    }
    paths["/api/governance/usage-reset"] = {
        "post": operation(
            "Zero one key's, team's or customer's counters (a new window starts now)",
            {"200": reply("Usage reset successfully", ref("Message"))},
            body="UsageReset",
            errors=("404",),
        )
    }
    paths["/api/governance/debug/stats"] = {
        "get": operation(
            "Counts of governance rows and admission-engine figures",
            {
                "200": reply(
                    "Statistics",
                    obj(
                        {
                            "plugin_stats": {"type": "object"},
                            "database_stats": {
                                "type": "object",
                                "additionalProperties": INT,
                            },
                            **stamp,
                        }
                    ),
                )
            },
        )
    }
    paths["/api/governance/debug/counters"] = {
        "get": operation(
            "The admission engine's live counters",
            {
                "200": reply(
                    "Counters",
                    obj(
                        {
                            "counters": {"type": "array", "items": {"type": "object"}},
                            "count": INT,
                            **stamp,
                        }
                    ),
                )
            },
        )
    }
    health = obj(
        {
            "status": {"enum": ["healthy", "unhealthy"]},
            **stamp,
            "checks": obj({"database": obj({"status": STR, "error": STR}, optional=("error",))}),
        }
    )
    paths["/api/governance/debug/health"] = {
        "get": operation(
            "Governance health (the database answers)",
            {"200": reply("Healthy", health), "503": reply("Unhealthy", health)},
        )
    }
    paths["/api/usage"] = {
        "get": operation(
            "Usage records, newest first (see docs/ledger.md)",
            {"200": reply("One page", {"type": "object"})},
            params=[
                *(
                    query(name, text)
                    for name, text in (
                        ("key_id", "only this virtual key"),
                        ("virtual_key_id", "the same as key_id (key_id wins)"),
                        ("team_id", "only this team"),
                        ("customer_id", "only this customer"),
                        ("model", "only this model"),
                    )
                ),
                query("since", "from this time on", MOMENT),
                query("until", "before this time", MOMENT),
                count_param(50, 1000),
                query("cursor", "next_cursor of the previous page (opaque)"),
            ],
        )
    }
    from tollhouse.governance import openapi_alerts  # it imports this module's helpers

    paths.update(openapi_alerts.paths())
    paths["/api/openapi.json"] = {
        "get": operation("This document", {"200": reply("OpenAPI 3.1", {"type": "object"})})
    }
    return paths


JSON_VALUE_REF = ref("JsonValue")
# Any JSON value but a string with a NUL: what an unknown field of a body may hold (it is
# ignored, as in Bifrost, but checked for NUL characters with the rest of the body).
JSON_VALUE: dict[str, Any] = {
    "anyOf": [
        {"type": ["null", "boolean", "number"]},
        TEXT,
        {"type": "array", "items": ref("JsonValue")},
        {"type": "object", "propertyNames": TEXT, "additionalProperties": ref("JsonValue")},
    ],
    "description": "any JSON value without NUL characters",
}


def no_nul(node: Any) -> None:
    """A request schema as ``bounds.no_nul`` reads bodies: no NUL in any string or key,
    unknown fields ignored (any JSON, no NUL in it); time zones point at their list."""
    if isinstance(node, list):
        for item in node:
            no_nul(item)
        return
    if not isinstance(node, dict):
        return
    if node.pop(ZONE_MARK, False):
        del node["type"]
        node["$ref"] = _REF.format(model="TimeZone")
    if node.get("type") == "string" and not {"pattern", "format", "enum", "const"} & set(node):
        node["pattern"] = NO_NUL
    if node.get("type") == "object" and "properties" in node:
        node.setdefault("propertyNames", TEXT)
        node.setdefault("additionalProperties", JSON_VALUE_REF)
    for key, value in node.items():
        if key not in ("examples", "default", "propertyNames"):
            no_nul(value)


def _time_zones() -> dict[str, Any]:
    """The names as one pattern, not an ``enum``: a fuzzer tries every value of an enum."""
    names = sorted(available_timezones())
    spelled = (re.sub(r"[^A-Za-z0-9_/-]", lambda m: f"[{m.group()}]", name) for name in names)
    return {
        "type": "string",
        "pattern": f"^(?:{'|'.join(spelled)})$",
        "description": "an IANA time zone name this host knows",
        "examples": ["UTC", "Europe/Paris"],
    }


@functools.cache
def document() -> dict[str, Any]:
    """The whole document (built once)."""
    _, defs = models_json_schema(
        [(model, "validation") for model in REQUEST_MODELS], ref_template=_REF
    )
    requests = defs.get("$defs", {})
    no_nul(requests)
    from tollhouse.governance import openapi_alerts

    try:
        release = version("tollhouse")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        release = "0"
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Tollhouse admin API",
            "version": release,
            "description": "Governance (Bifrost-compatible) and usage. Errors are "
            '{"error": "<message>", "code": "<machine code>"}.',
        },
        "paths": _paths(),
        "components": {
            "schemas": {
                **requests,
                "TimeZone": _time_zones(),
                "JsonValue": JSON_VALUE,
                **RESPONSE_SCHEMAS,
                **openapi_alerts.schemas(),
            },
            "responses": {f"E{code}": reply(text, ref("Error")) for code, text in _ERRORS.items()},
            "securitySchemes": {
                "adminKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "TOLLHOUSE_ADMIN_KEY; unset: loopback clients only",
                }
            },
        },
        "security": [{"adminKey": []}],
    }
