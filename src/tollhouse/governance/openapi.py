"""The admin API's OpenAPI 3.1 document, served at ``GET /api/openapi.json``.

Request bodies come from the Pydantic models in ``schemas`` (so the document cannot
drift from what is accepted); response shapes are written out here, next to one another,
and ``tests/governance/test_admin_openapi.py`` checks every route is described.
"""

from __future__ import annotations

import functools
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from pydantic.json_schema import models_json_schema

from tollhouse.governance.schemas import REQUEST_MODELS

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
    when unset (an entity's links and lists are never left out: DESIGN §6)."""
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
    "400": "Invalid JSON or a field that fails validation (wrong type, bad value)",
    "401": "Admin key missing or wrong (when TOLLHOUSE_ADMIN_KEY is set)",
    "403": "Not a loopback client and no admin key is set",
    "404": "No such entity",
}


def _json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _reply(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": _json_content(schema)}


def _operation(
    summary: str,
    responses: dict[str, Any],
    *,
    body: str | None = None,
    params: list[dict[str, Any]] | None = None,
    errors: tuple[str, ...] = ("401", "403"),
) -> dict[str, Any]:
    op: dict[str, Any] = {"summary": summary, "tags": ["governance"]}
    if params:
        op["parameters"] = params
    if body is not None:
        op["requestBody"] = {"required": True, "content": _json_content(ref(body))}
    op["responses"] = {
        **responses,
        **{code: {"$ref": f"#/components/responses/E{code}"} for code in errors},
    }
    return op


def _query(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "schema": STR, "description": description}


_ID = {"name": "id", "in": "path", "required": True, "schema": STR}


def _crud(
    label: str, name: str, schema: str, filters: tuple[str, ...]
) -> tuple[dict[str, Any], dict[str, Any]]:
    plural = f"{name}s"
    single = obj({name: ref(schema)})
    changed = obj({"message": STR, name: ref(schema)})
    collection = {
        "get": _operation(
            f"List {plural.replace('_', ' ')}",
            {
                "200": _reply(
                    "All of them",
                    obj({plural: {"type": "array", "items": ref(schema)}, "count": INT}),
                )
            },
            params=[_query(f, f"only those with this {f}") for f in filters],
        ),
        "post": _operation(
            f"Create a {label.lower()}",
            {"201": _reply(f"{label} created successfully", changed)},
            body=f"{schema}Create",
            errors=("400", "401", "403"),
        ),
    }
    item = {
        "get": _operation(
            f"Get a {label.lower()}",
            {"200": _reply("Found", single)},
            params=[_ID],
            errors=("401", "403", "404"),
        ),
        "put": _operation(
            f"Update a {label.lower()} (merge: fields left out are unchanged)",
            {"200": _reply(f"{label} updated successfully", changed)},
            body=f"{schema}Update",
            params=[_ID],
            errors=("400", "401", "403", "404"),
        ),
        "delete": _operation(
            f"Delete a {label.lower()}",
            {"200": _reply(f"{label} deleted successfully", ref("Message"))},
            params=[_ID],
            errors=("401", "403", "404"),
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
        "get": _operation(
            "Budget spend and rate-limit counters per virtual key",
            {
                "200": _reply(
                    "Every key, or the one asked for",
                    {
                        "oneOf": [
                            obj({"usage_stats": {"type": "array", "items": ref("KeyUsage")}}),
                            obj({"virtual_key_id": STR, "usage_stats": ref("KeyUsage")}),
                        ]
                    },
                )
            },
            params=[_query("virtual_key_id", "only this key")],
            errors=("401", "403", "404"),
        )
    }
    paths["/api/governance/usage-reset"] = {
        "post": _operation(
            "Zero one key's, team's or customer's counters (a new window starts now)",
            {"200": _reply("Usage reset successfully", ref("Message"))},
            body="UsageReset",
            errors=("400", "401", "403", "404"),
        )
    }
    paths["/api/governance/debug/stats"] = {
        "get": _operation(
            "Counts of governance rows and admission-engine figures",
            {
                "200": _reply(
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
        "get": _operation(
            "The admission engine's live counters",
            {
                "200": _reply(
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
        "get": _operation(
            "Governance health (the database answers)",
            {"200": _reply("Healthy", health), "503": _reply("Unhealthy", health)},
        )
    }
    paths["/api/usage"] = {
        "get": _operation(
            "Usage records, newest first (see docs/ledger.md)",
            {"200": _reply("One page", {"type": "object"})},
            params=[
                _query(name, text)
                for name, text in (
                    ("key_id", "only this virtual key"),
                    ("team_id", "only this team"),
                    ("customer_id", "only this customer"),
                    ("model", "only this model"),
                    ("since", "ISO 8601 or Unix seconds"),
                    ("until", "ISO 8601 or Unix seconds (exclusive)"),
                    ("limit", "1-1000, default 50"),
                    ("cursor", "next_cursor of the previous page"),
                )
            ],
            errors=("400", "401", "403"),
        )
    }
    paths["/api/openapi.json"] = {
        "get": _operation("This document", {"200": _reply("OpenAPI 3.1", {"type": "object"})})
    }
    return paths


@functools.cache
def document() -> dict[str, Any]:
    """The whole document (built once)."""
    _, defs = models_json_schema(
        [(model, "validation") for model in REQUEST_MODELS], ref_template=_REF
    )
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
            "schemas": {**defs.get("$defs", {}), **RESPONSE_SCHEMAS},
            "responses": {f"E{code}": _reply(text, ref("Error")) for code, text in _ERRORS.items()},
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
