"""Routes that describe themselves: one ``Resource`` per path, one ``Operation`` per method.

An operation is its handler and what the OpenAPI document says of it (``web/openapi.py``
builds the document from these, so a route cannot be served undescribed)::

    Resource("/alerts", {"GET": Operation(list_alerts, "Alert history, newest first",
                                          {200: Answer(AlertList, "The latest ones")},
                                          query=AlertsQuery, tag="alerts")})

**Methods.** Starlette answers a method no route of a path takes with the ``Allow`` of
the first route that matched the path: with one route per method, a 405 named one
method of several. One route per path dispatching on the method lists them all:
``HEAD`` comes with ``GET`` (answered by the ``GET`` handler), and any other method —
``OPTIONS`` included: there is no CORS preflight to answer — is a 405
``method_not_allowed`` whose ``Allow`` header names the path's methods.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

Endpoint = Callable[[Request], Awaitable[Response]]


class Answer(NamedTuple):
    """A documented answer: its body's model and what it means."""

    model: type[BaseModel]
    description: str


@dataclass(frozen=True, slots=True)
class Operation:
    """One method of a path.

    ``responses`` are the answers the handler gives (by status); ``errors`` the refusals
    particular to it (a 404 for an unknown id…), on top of those the document adds for
    every operation of its section (authentication, body size) and for any body or query
    (400)."""

    handler: Endpoint
    summary: str
    responses: Mapping[int, Answer]
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    errors: tuple[int, ...] = ()
    tag: str = "governance"


class Resource(Route):
    """One route for every method ``path`` serves, dispatching on the method."""

    def __init__(
        self, path: str, operations: Mapping[str, Operation], *, name: str | None = None
    ) -> None:
        self.operations = {method.upper(): op for method, op in operations.items()}
        table = {method: op.handler for method, op in self.operations.items()}
        if "GET" in table:
            table.setdefault("HEAD", table["GET"])

        async def dispatch(request: Request) -> Response:
            return await table[request.method](request)

        super().__init__(path, dispatch, methods=list(table), name=name)


def client_address(request: Request) -> str:
    """The client's address: the peer's, or a trusted proxy's ``X-Forwarded-For`` entry
    (``web.server`` tells uvicorn which proxies to believe)."""
    return request.client.host if request.client else "unknown"
