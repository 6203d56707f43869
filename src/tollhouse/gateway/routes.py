"""``/v1/*``: OpenAI- and Anthropic-compatible routes. Thin: parse, call, shape."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from tollhouse.errors import InvalidJSON
from tollhouse.gateway.context import RequestContext
from tollhouse.gateway.service import Gateway, Reply
from tollhouse.gateway.streaming import EventStreamResponse


async def read_json_object(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidJSON(f"request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidJSON("request body must be a JSON object")
    return body


def _respond(reply: Reply) -> ASGIApp:
    if reply.stream is not None:
        return EventStreamResponse(reply.stream, reply.headers)
    return Response(reply.body, reply.status, reply.headers, media_type=reply.media_type)


def _endpoint(name: str) -> Any:
    async def handler(request: Request) -> ASGIApp:
        body = await read_json_object(request)
        gateway: Gateway = request.app.state.gateway
        ctx = RequestContext()
        request.state.request_id = ctx.request_id
        return _respond(await gateway.handle(name, body, ctx, request.headers))

    handler.__name__ = f"{name}_endpoint"
    return handler


async def list_models(request: Request) -> Response:
    gateway: Gateway = request.app.state.gateway
    data = [
        {"id": model, "object": "model", "created": 0, "owned_by": owner}
        for model, owner in gateway.models(request.headers)
    ]
    return Response(orjson.dumps({"object": "list", "data": data}), media_type="application/json")


routes = [
    Route("/v1/chat/completions", _endpoint("chat"), methods=["POST"]),
    Route("/chat/completions", _endpoint("chat"), methods=["POST"]),
    Route("/v1/messages", _endpoint("messages"), methods=["POST"]),
    Route("/v1/embeddings", _endpoint("embeddings"), methods=["POST"]),
    Route("/embeddings", _endpoint("embeddings"), methods=["POST"]),
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/models", list_models, methods=["GET"]),
]
