"""Customers and teams: list, create, edit (budgets, limits, tags), delete, through
``governance.service`` and the admin API's bodies; one spec per kind, the pages shared
(keys have more fields and a page of their own, ``keys.py``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from tollhouse.dashboard import forms
from tollhouse.dashboard.access import Visitor
from tollhouse.dashboard.pages import form_text, names, page, services
from tollhouse.dashboard.render import html
from tollhouse.errors import TollhouseError
from tollhouse.governance import service
from tollhouse.governance.answers import customer_read, team_read
from tollhouse.governance.schemas import CustomerCreate, CustomerUpdate, TeamCreate, TeamUpdate
from tollhouse.web.validation import parse


@dataclass(frozen=True, slots=True)
class Kind:
    slug: str  # "teams": the path and the nav entry
    noun: str  # "team"
    create_model: type[BaseModel]
    update_model: type[BaseModel]
    create: Callable[..., Awaitable[Any]]
    get: Callable[..., Awaitable[Any]]
    list: Callable[..., Awaitable[list[Any]]]
    update: Callable[..., Awaitable[Any]]
    delete: Callable[..., Awaitable[None]]
    read: Callable[[Any, Any], Any]
    key_filter: str  # the keys page's and the log's filter for this kind

    @property
    def base(self) -> str:
        return f"/ui/{self.slug}"


CUSTOMERS = Kind(
    "customers", "customer", CustomerCreate, CustomerUpdate, service.create_customer,
    service.get_customer, service.list_customers, service.update_customer,
    service.delete_customer, customer_read, "customer_id",
)  # fmt: skip
TEAMS = Kind(
    "teams", "team", TeamCreate, TeamUpdate, service.create_team, service.get_team,
    service.list_teams, service.update_team, service.delete_team, team_read, "team_id",
)  # fmt: skip


def _body(kind: Kind, form: forms.Form, *, creating: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"name": forms.text(form, "name"),
                            **forms.limits(form, creating=creating)}  # fmt: skip
    if kind is TEAMS:
        body["customer_id"] = forms.text(form, "customer_id")
        body["tags"] = forms.words(form, "tags")
    if creating:
        return {name: value for name, value in body.items() if value is not None}
    return body


def _form_of(kind: Kind, entity: Any) -> forms.Form:
    if entity is None:
        return {}
    form = {"name": entity.name, **forms.limits_form(entity.budget, entity.rate_limit)}
    if kind is TEAMS:
        form["customer_id"] = entity.customer_id or ""
        form["tags"] = ", ".join(entity.tags or [])
    return form


def routes(kind: Kind) -> list[Route]:
    """The pages of one kind: list, new, edit, delete."""

    def read(view: Any, request: Request) -> Any:
        return kind.read(view, services(request).admission)

    def form_page(request: Request, who: Visitor, entity: Any, form: forms.Form | None,
                  error: TollhouseError | None = None) -> Response:  # fmt: skip
        label = kind.noun.capitalize()
        context = {
            "title": f"{label} {entity.name}" if entity else f"New {kind.noun}",
            "nav": kind.slug,
            "kind": kind,
            "entity": entity,
            "form": form if form is not None else _form_of(kind, entity),
            "error": error,
            "customers": names(request).choices("customer"),
        }
        return html(request, "scope_form.html", context, who, error.status_code if error else 200)

    @page
    async def listing(request: Request, who: Visitor) -> Response:
        async with services(request).engine.connect() as conn:
            views = await kind.list(conn)
        entities = sorted((read(v, request) for v in views), key=lambda e: e.name.lower())
        context = {"title": kind.slug.capitalize(), "nav": kind.slug, "kind": kind,
                   "entities": entities, "names": names(request)}  # fmt: skip
        return html(request, "scopes.html", context, who)

    @page
    async def new(request: Request, who: Visitor) -> Response:
        if request.method == "GET":
            return form_page(request, who, None, None)
        form = await form_text(request)
        try:
            body = parse(kind.create_model, _body(kind, form, creating=True))
            async with services(request).engine.begin() as conn:
                view = await kind.create(conn, body)
        except TollhouseError as exc:
            return form_page(request, who, None, form, exc)
        await services(request).admission.reload()
        return RedirectResponse(f"{kind.base}/{read(view, request).id}?saved=1", 303)

    @page
    async def edit(request: Request, who: Visitor) -> Response:
        entity_id = request.path_params["id"]
        if request.method == "POST":
            form = await form_text(request)
            try:
                body = parse(kind.update_model, _body(kind, form, creating=False))
                async with services(request).engine.begin() as conn:
                    await kind.update(conn, entity_id, body)
            except TollhouseError as exc:
                async with services(request).engine.connect() as conn:
                    view = await kind.get(conn, entity_id)
                return form_page(request, who, read(view, request), form, exc)
            await services(request).admission.reload()
            return RedirectResponse(f"{kind.base}/{entity_id}?saved=1", 303)
        async with services(request).engine.connect() as conn:
            view = await kind.get(conn, entity_id)
        return form_page(request, who, read(view, request), None)

    @page
    async def delete(request: Request, who: Visitor) -> Response:
        async with services(request).engine.begin() as conn:
            await kind.delete(conn, request.path_params["id"])
        await services(request).admission.reload()
        return RedirectResponse(f"{kind.base}?deleted=1", 303)

    return [
        Route(kind.base, listing, methods=["GET"], name=f"ui-{kind.slug}"),
        Route(f"{kind.base}/new", new, methods=["GET", "POST"]),
        Route(f"{kind.base}/{{id}}", edit, methods=["GET", "POST"]),
        Route(f"{kind.base}/{{id}}/delete", delete, methods=["POST"]),
    ]
