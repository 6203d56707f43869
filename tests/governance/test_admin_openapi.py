"""``GET /api/openapi.json`` describes every admin route, with bodies and errors."""

from __future__ import annotations

from typing import Any

from starlette.routing import Route

from tollhouse.alerts.api import routes as alert_routes
from tollhouse.governance.openapi import document
from tollhouse.governance.routes import routes as governance_routes
from tollhouse.ledger.routes import routes as ledger_routes


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


async def test_served_document(gateway):
    response = await gateway.get("/api/openapi.json")
    assert response.status_code == 200
    doc = response.json()
    assert doc["openapi"].startswith("3.1")
    assert doc == document()


def test_every_admin_route_is_described():
    doc = document()
    served = set()
    for route in [*governance_routes, *ledger_routes, *alert_routes]:
        assert isinstance(route, Route)
        path = f"/api{route.path}"
        assert path in doc["paths"], path
        for method in route.methods or ():
            if method == "HEAD":
                continue
            assert method.lower() in doc["paths"][path], (method, path)
            served.add((method.lower(), path))
    # And nothing is described that is not served.
    described = {(method, path) for path, item in doc["paths"].items() for method in item}
    assert described == served


def test_every_operation_documents_the_admin_refusals():
    for path, item in document()["paths"].items():
        for method, op in item.items():
            codes = set(op["responses"])
            assert {"401", "403", "413", "421", "429"} <= codes, (method, path)
            if "requestBody" in op:
                assert {"400", "415"} <= codes, (method, path)
            if any(param["in"] == "query" for param in op.get("parameters", [])):
                assert "400" in codes, (method, path)
            for code in codes - {"200", "201", "503"}:
                answer = op["responses"][code]
                assert answer == {"$ref": f"#/components/responses/E{code}"}, (method, path)


def test_the_document_says_what_is_accepted():
    schemas = document()["components"]["schemas"]
    budget = schemas["BudgetCreate"]["properties"]
    # null means the default in a create body.
    assert {"type": "null"} in budget["alert_thresholds"]["anyOf"]
    assert budget["max_limit"]["multipleOf"] == 1e-9
    reset = schemas["UsageReset"]
    assert len(reset["oneOf"]) == 3
    usage = document()["paths"]["/api/usage"]["get"]["parameters"]
    limit = next(p for p in usage if p["name"] == "limit")
    assert limit["schema"]["type"] == "integer" and limit["schema"]["maximum"] == 1000


def test_every_operation_has_responses_and_errors():
    doc = document()
    for path, item in doc["paths"].items():
        for method, op in item.items():
            codes = set(op["responses"])
            assert codes & {"200", "201"}, (method, path)
            assert {"401", "403"} <= codes, (method, path)
            if "{id}" in path:
                assert "404" in codes, (method, path)
            if "requestBody" in op:
                assert "400" in codes, (method, path)
            for param in op.get("parameters", []):
                if param["in"] == "path":
                    assert f"{{{param['name']}}}" in path


def test_every_reference_resolves():
    doc = document()
    for ref in refs(doc):
        resolve(doc, ref)


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
    assert reply["properties"]["virtual_key"] == {"$ref": "#/components/schemas/VirtualKey"}
    # Update fields may be left out but not sent as null where the API refuses null.
    update = schemas["BudgetUpdate"]["properties"]["max_limit"]
    assert "anyOf" not in update and update["type"] == "number"


def test_error_shape_is_documented():
    error = document()["components"]["schemas"]["Error"]
    assert set(error["required"]) == {"error", "code"}
