"""``/v1/*``: OpenAI- and Anthropic-compatible routes. Thin: parse, call, shape."""

from __future__ import annotations

from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp

from tollhouse.gateway.context import RequestContext
from tollhouse.gateway.service import Gateway, Reply
from tollhouse.gateway.streaming import EventStreamResponse
from tollhouse.web.bodies import read_json_object
from tollhouse.web.responses import JSONResponse


class GatewayServices(Protocol):
    """What these routes use of the running service (``web/services.py``)."""

    @property
    def gateway(self) -> Gateway: ...


def _services(request: Request) -> GatewayServices:
    services: GatewayServices = request.app.services
    return services


def _respond(reply: Reply) -> ASGIApp:
    if reply.stream is not None:
        return EventStreamResponse(reply.stream, reply.headers)
    return Response(reply.body, reply.status, reply.headers, media_type=reply.media_type)


def _endpoint(name: str) -> Any:
    async def handler(request: Request) -> ASGIApp:
        gateway = _services(request).gateway
        ctx = RequestContext()
        request.state.request_id = ctx.request_id
        # The key is checked from the headers before a byte of the body is read.
        key = gateway.authenticate(request.headers)
        body = await read_json_object(request)
        return _respond(await gateway.handle(name, body, ctx, key))

    handler.__name__ = f"{name}_endpoint"
    return handler


async def list_models(request: Request) -> Response:
    gateway = _services(request).gateway
    data = [
        {"id": model, "object": "model", "created": 0, "owned_by": owner}
        for model, owner in gateway.models(request.headers)
    ]
    return JSONResponse({"object": "list", "data": data})


routes = [
    Route("/v1/chat/completions", _endpoint("chat"), methods=["POST"]),
    Route("/chat/completions", _endpoint("chat"), methods=["POST"]),
    Route("/v1/messages", _endpoint("messages"), methods=["POST"]),
    Route("/v1/embeddings", _endpoint("embeddings"), methods=["POST"]),
    Route("/embeddings", _endpoint("embeddings"), methods=["POST"]),
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/models", list_models, methods=["GET"]),
]
