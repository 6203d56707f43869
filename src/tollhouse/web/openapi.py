"""An OpenAPI 3.1 document built from the routes themselves.

Every path is a ``routing.Resource`` whose operations name their models: the request
body's (validation schema), the query's (one parameter per field) and each answer's
(serialisation schema). ``document`` turns them into paths and ``components``, so what
the document says is what the code validates and writes; a route that does not describe
itself is an error here, not a gap in the document.

Two rules of the body reader (``web/validation.py``) are added to every request schema,
because no model spells them: no string or key holds a NUL, and an unknown field (which
is ignored) may hold any JSON value but such a string. A schema node
``{"x-component": "Name"}`` is a reference to a component given by the caller (the
time-zone list, once instead of in every field that takes one).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema
from starlette.convertors import CONVERTOR_TYPES
from starlette.routing import BaseRoute

from tollhouse.web.query import NO_NUL
from tollhouse.web.routing import Operation, Resource

REF = "#/components/schemas/{model}"
COMPONENT = "x-component"
TEXT: dict[str, Any] = {"type": "string", "pattern": NO_NUL}
JSON_VALUE: dict[str, Any] = {
    "anyOf": [
        {"type": ["null", "boolean", "number"]},
        TEXT,
        {"type": "array", "items": {"$ref": REF.format(model="JsonValue")}},
        {
            "type": "object",
            "propertyNames": TEXT,
            "additionalProperties": {"$ref": REF.format(model="JsonValue")},
        },
    ],
    "description": "any JSON value without NUL characters",
}


@dataclass(frozen=True)
class Section:
    """Routes under one prefix that share their refusals and credentials.

    ``always``: statuses any operation may be answered (authentication, body size);
    ``with_body`` and ``with_query`` are added to operations that take one."""

    prefix: str
    routes: Sequence[BaseRoute]
    always: tuple[int, ...]
    with_body: tuple[int, ...] = (400,)
    with_query: tuple[int, ...] = (400,)
    security: list[dict[str, list[str]]] | None = None  # None: the document's


def operations(sections: Iterable[Section]) -> Iterable[tuple[Section, str, str, Operation]]:
    """Every (section, path, method, operation) served, in route order."""
    for section in sections:
        for route in section.routes:
            if not isinstance(route, Resource):
                raise TypeError(f"{section.prefix} route {route!r} does not describe itself")
            for method, op in route.operations.items():
                yield section, f"{section.prefix}{route.path}", method, op


def document(
    *,
    info: dict[str, Any],
    sections: Sequence[Section],
    errors: Mapping[int, str],
    error_model: type[BaseModel],
    components: Mapping[str, dict[str, Any]],
    security_schemes: Mapping[str, Any],
    security: list[dict[str, list[str]]],
) -> dict[str, Any]:
    """The whole document; ``errors`` describes each refusal status (all of them in
    ``error_model``'s shape, a 405 with its ``Allow`` header)."""
    found = list(operations(sections))
    bodies = _unique(op.body for *_, op in found if op.body is not None)
    answers = _unique([*(a.model for *_, op in found for a in op.responses.values()), error_model])
    requests = _definitions(bodies, "validation")
    _link(requests)
    refuse_nul(requests)
    replies = _definitions(answers, "serialization")
    _link(replies)
    clash = set(requests) & set(replies)
    if clash:
        raise ValueError(f"models named alike in requests and answers: {sorted(clash)}")
    # Two models of one name get qualified names: operations refer to them by name.
    unnamed = {m.__name__ for m in bodies} - set(requests)
    unnamed |= {m.__name__ for m in answers} - set(replies)
    if unnamed:
        raise ValueError(f"models named alike in different modules: {sorted(unnamed)}")
    schemas = {**requests, **replies, **components, "JsonValue": JSON_VALUE}
    paths: dict[str, Any] = {}
    for section, path, method, op in found:
        paths.setdefault(_PARAM_TYPE.sub(r"{\1}", path), {})[method.lower()] = _operation(
            section, path, op
        )
    return {
        "openapi": "3.1.0",
        "info": info,
        "paths": paths,
        "components": {
            "schemas": schemas,
            "responses": {
                f"E{code}": _refusal(code, text, error_model) for code, text in errors.items()
            },
            "securitySchemes": dict(security_schemes),
        },
        "security": security,
    }


def _unique(models: Iterable[type[BaseModel]]) -> list[type[BaseModel]]:
    return list(dict.fromkeys(models))


def _definitions(models: list[type[BaseModel]], mode: JsonSchemaMode) -> dict[str, Any]:
    _, defs = models_json_schema([(model, mode) for model in models], ref_template=REF)
    found: dict[str, Any] = defs.get("$defs", {})
    return found


def _content(model: type[BaseModel]) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": REF.format(model=model.__name__)}}}


def _operation(section: Section, path: str, op: Operation) -> dict[str, Any]:
    spec: dict[str, Any] = {"summary": op.summary, "tags": [op.tag]}
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": _path_schema(convertor)}
        for name, convertor in _path_params(path)
    ]
    if op.query is not None:
        parameters += _query_parameters(op.query)
    if parameters:
        spec["parameters"] = parameters
    codes = {*op.errors, *section.always}
    if op.body is not None:
        spec["requestBody"] = {"required": True, "content": _content(op.body)}
        codes |= set(section.with_body)
    if op.query is not None:
        codes |= set(section.with_query)
    responses: dict[str, Any] = {
        str(status): {"description": answer.description, "content": _content(answer.model)}
        for status, answer in sorted(op.responses.items())
    }
    for code in sorted(codes - set(op.responses)):
        responses[str(code)] = {"$ref": f"#/components/responses/E{code}"}
    spec["responses"] = responses
    if section.security is not None:
        spec["security"] = section.security
    return spec


# ``{id:sandbox_id}``: a path parameter with a convertor of its own (``starlette.convertors``)
_PARAM_TYPE = re.compile(r"{(\w+):\w+}")


def _path_params(path: str) -> list[tuple[str, str]]:
    found = [part[1:-1].partition(":") for part in path.split("/") if part.startswith("{")]
    return [(name, convertor or "str") for name, _, convertor in found]


def _path_schema(convertor: str) -> dict[str, Any]:
    """A string, with the convertor's pattern when it has one of its own."""
    regex = CONVERTOR_TYPES[convertor].regex
    return {"type": "string"} if regex == "[^/]+" else {"type": "string", "pattern": f"^{regex}$"}


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    properties = model.model_json_schema(mode="validation", ref_template=REF)["properties"]
    parameters = []
    for name, info in model.model_fields.items():
        schema = {
            k: v
            for k, v in properties[name].items()
            if k not in ("title", "description") and not (k == "default" and v is None)
        }
        parameter = {"name": name, "in": "query", "schema": schema}
        if info.description:
            parameter["description"] = info.description
        parameters.append(parameter)
    return parameters


def _refusal(code: int, text: str, model: type[BaseModel]) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": text, "content": _content(model)}
    if code == 405:
        answer["headers"] = {
            "Allow": {
                "description": "the methods the path takes",
                "schema": {"type": "string", "examples": ["GET, HEAD, POST"]},
            }
        }
    return answer


def refuse_nul(node: Any) -> None:
    """A request schema as the body reader reads bodies: no NUL in any string or key,
    unknown fields ignored (any JSON, no NUL in it)."""
    if isinstance(node, list):
        for item in node:
            refuse_nul(item)
        return
    if not isinstance(node, dict):
        return
    if node.get("type") == "string" and not {"pattern", "format", "enum", "const"} & set(node):
        node["pattern"] = NO_NUL
    if node.get("type") == "object" and (
        "properties" in node or node.get("additionalProperties") is True
    ):
        node.setdefault("propertyNames", TEXT)
        if node.get("additionalProperties", True) is True:
            node["additionalProperties"] = {"$ref": REF.format(model="JsonValue")}
    for key, value in node.items():
        if key not in ("examples", "default", "propertyNames"):
            refuse_nul(value)


def _link(node: Any) -> None:
    """``{"x-component": name}`` (and its type) becomes a ``$ref`` to that component."""
    if isinstance(node, list):
        for item in node:
            _link(item)
    elif isinstance(node, dict):
        name = node.pop(COMPONENT, None)
        if name is not None:
            node.pop("type", None)
            node["$ref"] = REF.format(model=name)
        for value in node.values():
            _link(value)
