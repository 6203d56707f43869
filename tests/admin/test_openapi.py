"""``GET /api/openapi.json`` describes every ``/api`` route the app serves, and the public
catalog (``/catalog/*``), with bodies, queries, answers and refusals, all generated from
the routes' models."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from starlette.routing import BaseRoute, Mount, Route

from tollhouse.admin.routes import document
from tollhouse.app import create_app
from tollhouse.web.routing import Resource


def refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for value in node.values() for r in refs(value)]
    if isinstance(node, list):
        return [r for value in node for r in refs(value)]
    return []


def resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def served(routes: list[BaseRoute], prefix: str = "") -> Iterator[tuple[str, Route]]:
    """Every route of the app with its full path, through mounts."""
    for route in routes:
        if isinstance(route, Mount):
            yield from served(list(route.routes), prefix + route.path)
        elif isinstance(route, Route):
            yield prefix + route.path_format, route


def api_operations(settings) -> set[tuple[str, str]]:
    """(method, path) of every ``/api`` and ``/catalog`` operation the app built from
    ``settings`` serves."""
    found = set()
    for path, route in served(list(create_app(settings).routes)):
        if not path.startswith(("/api/", "/catalog/")):
            continue
        if route.methods is None:  # ``app._OnlyAllows``: a 405 for any method, no more
            continue
        assert isinstance(route, Resource), f"{path} does not describe itself"
        found |= {(method.lower(), path) for method in route.methods if method != "HEAD"}
    return found


def test_every_api_route_of_the_app_is_described_and_nothing_else(settings):
    doc = document()
    described = {(method, path) for path, item in doc["paths"].items() for method in item}
    app_serves = api_operations(settings)
    assert ("post", "/api/webhooks/budget") in app_serves
    assert ("get", "/api/openapi.json") in app_serves
    assert ("get", "/catalog/models") in app_serves
    assert app_serves - described == set(), "served but not in the document"
    assert described - app_serves == set(), "in the document but not served"


async def test_served_document(gateway):
    response = await gateway.get("/api/openapi.json")
    assert response.status_code == 200
    doc = response.json()
    assert doc["openapi"].startswith("3.1")
    assert doc == document()


def test_every_operation_documents_its_refusals():
    for path, item in document()["paths"].items():
        for method, op in item.items():
            codes = set(op["responses"])
            assert codes & {"200", "201"}, (method, path)
            if path == "/api/webhooks/budget":
                assert {"400", "401", "413", "422", "429", "503"} <= codes
                assert op["security"] == [{"webhookSignature": []}]
                continue
            if path == "/api/webhooks/stripe":
                assert {"401", "413", "422", "429", "503"} <= codes
                assert op["security"] == [{"stripeSignature": []}]
                continue
            if path.startswith("/catalog/"):
                # Public: no credential to refuse, only a body over the limit.
                assert op["security"] == [] and "413" in codes, (method, path)
                assert not {"401", "403", "421", "429"} & codes, (method, path)
                continue
            assert {"401", "403", "413", "421", "429"} <= codes, (method, path)
            if "requestBody" in op:
                assert {"400", "415"} <= codes, (method, path)
            if any(param["in"] == "query" for param in op.get("parameters", [])):
                assert "400" in codes, (method, path)
            if "{id}" in path:
                assert "404" in codes, (method, path)
            for param in op.get("parameters", []):
                if param["in"] == "path":
                    assert f"{{{param['name']}}}" in path
            for code in codes - {"200", "201", "503"}:
                assert op["responses"][code] == {"$ref": f"#/components/responses/E{code}"}


def test_every_reference_resolves():
    doc = document()
    for ref in refs(doc):
        resolve(doc, ref)


def test_every_answer_is_a_model_that_allows_nothing_more():
    doc = document()
    schemas = doc["components"]["schemas"]
    for path, item in doc["paths"].items():
        for method, op in item.items():
            for code, answer in op["responses"].items():
                if "$ref" in answer:
                    answer = resolve(doc, answer["$ref"])
                schema = answer["content"]["application/json"]["schema"]
                name = schema["$ref"].rsplit("/", 1)[1]
                model = schemas[name]
                options = [resolve(doc, o["$ref"]) for o in model.get("anyOf", [])] or [model]
                for option in options:
                    assert option["additionalProperties"] is False, (method, path, code)
                    assert set(option["required"]) == set(option["properties"]), (path, code)


def untitled(schema: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in schema.items() if k not in ("title", "description")}


def test_times_in_answers_have_one_format():
    schemas = document()["components"]["schemas"]
    stamp = untitled(schemas["BudgetRead"]["properties"]["created_at"])
    assert stamp["format"] == "date-time" and stamp["pattern"].endswith(r"\.[0-9]{6}Z$")
    record = untitled(schemas["UsageRecordRead"]["properties"]["created_at"])
    counter = schemas["CounterRead"]["properties"]["window_start"]
    assert record == stamp and counter["anyOf"] == [stamp, {"type": "null"}]


def test_the_document_says_what_is_accepted():
    doc = document()
    schemas = doc["components"]["schemas"]
    budget = schemas["BudgetCreate"]["properties"]
    # null means the default in a create body.
    assert {"type": "null"} in budget["alert_thresholds"]["anyOf"]
    assert budget["max_limit"]["multipleOf"] == 1e-9
    assert budget["timezone"]["anyOf"][0] == {"$ref": "#/components/schemas/TimeZone"}
    assert len(schemas["UsageReset"]["oneOf"]) == 3
    usage = doc["paths"]["/api/usage"]["get"]["parameters"]
    limit = next(p for p in usage if p["name"] == "limit")
    assert limit["schema"] == {"type": "integer", "minimum": 1, "maximum": 1000, "default": 50}
    channel = schemas["ChannelCreate"]
    assert [branch["properties"]["type"] for branch in channel["oneOf"]] == [
        {"const": "email"},
        {"const": "slack"},
        {"const": "webhook"},
    ]
    assert channel["oneOf"][0]["properties"]["config"]["required"] == ["to"]


def test_request_bodies_come_from_the_models():
    doc = document()
    schemas = doc["components"]["schemas"]
    create = schemas["VirtualKeyCreate"]
    assert create["required"] == ["name"]
    assert {"team_id", "customer_id", "budget", "rate_limit", "allowed_models"} <= set(
        create["properties"]
    )
    budget = schemas["BudgetCreate"]
    assert set(budget["required"]) == {"max_limit", "reset_duration"}
    assert budget["properties"]["max_limit"]["type"] == "number"
    assert budget["properties"]["alert_thresholds"]["default"] == [0.8, 1.0]
    post = doc["paths"]["/api/governance/virtual-keys"]["post"]
    body = post["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/VirtualKeyCreate"}
    reply = post["responses"]["201"]["content"]["application/json"]["schema"]
    assert reply == {"$ref": "#/components/schemas/VirtualKeyWritten"}
    written = schemas["VirtualKeyWritten"]["properties"]["virtual_key"]
    assert written == {"$ref": "#/components/schemas/VirtualKeyRead"}
    # Update fields may be left out but not sent as null where the API refuses null.
    update = schemas["BudgetUpdate"]["properties"]["max_limit"]
    assert "anyOf" not in update and update["type"] == "number"
    # Every string of a body refuses NUL, unknown fields included.
    assert create["additionalProperties"] == {"$ref": "#/components/schemas/JsonValue"}
    assert create["properties"]["description"]["anyOf"][0]["pattern"] == "^[^\\x00]*$"


def test_error_shape_and_405_are_documented():
    components = document()["components"]
    error = components["schemas"]["Error"]
    assert set(error["required"]) == {"error", "code"}
    assert "Allow" in components["responses"]["E405"]["headers"]
    assert "OPTIONS" in document()["info"]["description"]


async def test_any_other_method_is_405_naming_the_documented_ones(gateway):
    for path, item in document()["paths"].items():
        concrete = path.replace("{id}", "sbx_x" if "/sandboxes/" in path else "x")
        documented = {method.upper() for method in item}
        if "GET" in documented:
            documented.add("HEAD")
        for method in ("OPTIONS", "PATCH", *({"GET", "PUT", "POST", "DELETE"} - documented)):
            response = await gateway.request(method, concrete)
            assert response.status_code == 405, (method, path, response.text)
            allowed = {m.strip() for m in response.headers["allow"].split(",")}
            assert allowed == documented, (method, path)
            assert response.json()["code"] == "method_not_allowed"
