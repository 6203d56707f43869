"""``/api/policies``: policies, their dry run and impact estimate; ``/api/policy-decisions``:
the decision log (a path of its own: under ``/policies`` it would name a policy).

Same style as the governance API: 201 on create with the entity wrapped
(``{"policy": {...}}``), lists with ``count``, merge updates, 400 naming the field
(an invalid condition names ``condition``), 404 for unknown ids, 409 for a name taken.
A write reloads this process's policies before answering; other replicas follow within
their governance poll.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import tzinfo
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request
from starlette.responses import Response

from tollhouse.config import Settings
from tollhouse.policies import service, trial
from tollhouse.policies.engines import PolicyEngine
from tollhouse.policies.schemas import (
    DecisionPage,
    DecisionRead,
    DecisionsQuery,
    ImpactQuery,
    ImpactRead,
    PoliciesQuery,
    PolicyCreate,
    PolicyDeleted,
    PolicyList,
    PolicyOne,
    PolicyRead,
    PolicyTest,
    PolicyUpdate,
    PolicyWritten,
    TestResult,
)
from tollhouse.web.responses import JSONResponse
from tollhouse.web.routing import Answer, Operation, Resource
from tollhouse.web.validation import read_model


class Admission(Protocol):
    async def reload(self) -> None: ...


class Gate(Protocol):
    @property
    def engines(self) -> Mapping[str, PolicyEngine]: ...

    @property
    def zone(self) -> tzinfo: ...

    async def flush(self) -> None: ...


class PolicyServices(Protocol):
    """What these routes use of the running service (``web/services.py``)."""

    @property
    def settings(self) -> Settings: ...

    @property
    def engine(self) -> AsyncEngine: ...

    @property
    def admission(self) -> Admission: ...

    @property
    def policies(self) -> Gate: ...


def _services(request: Request) -> PolicyServices:
    services: PolicyServices = request.app.services
    return services


def _regions(services: PolicyServices) -> dict[str, str]:
    return {name: cfg.region for name, cfg in services.settings.providers.items()}


async def list_policies(request: Request) -> Response:
    action = PoliciesQuery.parse(request.query_params).action
    async with _services(request).engine.connect() as conn:
        rows = await service.list_policies(conn, action)
    items = [PolicyRead.from_row(row) for row in rows]
    return JSONResponse(PolicyList(policies=items, count=len(items)))


async def create_policy(request: Request) -> Response:
    body = await read_model(request, PolicyCreate)
    services = _services(request)
    async with services.engine.begin() as conn:
        row = await service.create_policy(conn, body, services.policies.engines)
    await services.admission.reload()
    reply = PolicyWritten(message="Policy created successfully", policy=PolicyRead.from_row(row))
    return JSONResponse(reply, 201)


async def get_policy(request: Request) -> Response:
    async with _services(request).engine.connect() as conn:
        row = await service.get_policy(conn, request.path_params["id"])
    return JSONResponse(PolicyOne(policy=PolicyRead.from_row(row)))


async def update_policy(request: Request) -> Response:
    body = await read_model(request, PolicyUpdate)
    services = _services(request)
    async with services.engine.begin() as conn:
        row = await service.update_policy(
            conn, request.path_params["id"], body, services.policies.engines
        )
    await services.admission.reload()
    reply = PolicyWritten(message="Policy updated successfully", policy=PolicyRead.from_row(row))
    return JSONResponse(reply)


async def delete_policy(request: Request) -> Response:
    services = _services(request)
    async with services.engine.begin() as conn:
        await service.delete_policy(conn, request.path_params["id"])
    await services.admission.reload()
    return JSONResponse(PolicyDeleted(message="Policy deleted successfully"))


async def test_policy(request: Request) -> Response:
    body = await read_model(request, PolicyTest)
    services = _services(request)
    async with services.engine.connect() as conn:
        row = await service.get_policy(conn, request.path_params["id"])
        found = await trial.dry_run(conn, row, body.input, body.key_id, services.policies.engines)
    return JSONResponse(TestResult.model_validate(found))


async def policy_impact(request: Request) -> Response:
    limit = ImpactQuery.parse(request.query_params).limit
    services = _services(request)
    async with services.engine.connect() as conn:
        row = await service.get_policy(conn, request.path_params["id"])
        found = await trial.impact(
            conn,
            row,
            limit,
            services.policies.engines,
            _regions(services),
            services.policies.zone,
        )
    return JSONResponse(ImpactRead.model_validate(found))


async def list_decisions(request: Request) -> Response:
    q = DecisionsQuery.parse(request.query_params)
    services = _services(request)
    await services.policies.flush()  # what this server decided is in the log
    async with services.engine.connect() as conn:
        rows, cursor = await service.list_decisions(
            conn, policy_id=q.policy_id, decision=q.decision, limit=q.limit, cursor=q.cursor
        )
    items = [DecisionRead.model_validate(dict(row._mapping)) for row in rows]
    return JSONResponse(DecisionPage(decisions=items, count=len(items), next_cursor=cursor))


def _op(handler: Any, summary: str, answers: dict[int, Answer], **more: Any) -> Operation:
    return Operation(handler, summary, answers, tag="policies", **more)


# Mounted under ``/api`` behind the admin key.
routes = [
    Resource(
        "/policies",
        {
            "GET": _op(
                list_policies,
                "List policies, highest priority first",
                {200: Answer(PolicyList, "All of them (or of one action)")},
                query=PoliciesQuery,
            ),
            "POST": _op(
                create_policy,
                "Create a policy (its condition compiled first)",
                {201: Answer(PolicyWritten, "Created")},
                body=PolicyCreate,
                errors=(409,),
            ),
        },
    ),
    Resource(
        "/policy-decisions",
        {
            "GET": _op(
                list_decisions,
                "The decision log, newest first: denials, errors (and allows if logged)",
                {200: Answer(DecisionPage, "One page")},
                query=DecisionsQuery,
            )
        },
    ),
    Resource(
        "/policies/{id}",
        {
            "GET": _op(get_policy, "One policy", {200: Answer(PolicyOne, "Found")}, errors=(404,)),
            "PUT": _op(
                update_policy,
                "Merge changes into a policy (its condition compiled again)",
                {200: Answer(PolicyWritten, "Updated")},
                body=PolicyUpdate,
                errors=(404, 409),
            ),
            "DELETE": _op(
                delete_policy,
                "Delete a policy",
                {200: Answer(PolicyDeleted, "Deleted")},
                errors=(404,),
            ),
        },
    ),
    Resource(
        "/policies/{id}/test",
        {
            "POST": _op(
                test_policy,
                "Dry run: what the policy alone does with an input",
                {200: Answer(TestResult, "Its answer, and the whole input it saw")},
                body=PolicyTest,
                errors=(404,),
            )
        },
    ),
    Resource(
        "/policies/{id}/impact",
        {
            "GET": _op(
                policy_impact,
                "How many of the latest requests the policy alone would have denied",
                {200: Answer(ImpactRead, "Replayed against the usage ledger")},
                query=ImpactQuery,
                errors=(404,),
            )
        },
    ),
]
