"""Virtual keys: list, create, edit (budgets, limits, allow-lists), rotate, revoke and
delete, through ``governance.service`` and the admin API's bodies (docs/dashboard.md)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from tollhouse.dashboard import forms
from tollhouse.dashboard.access import Visitor
from tollhouse.dashboard.pages import form_text, names, page, services
from tollhouse.dashboard.render import html
from tollhouse.errors import TollhouseError
from tollhouse.governance import service
from tollhouse.governance.answers import key_read
from tollhouse.governance.schemas import VirtualKeyCreate, VirtualKeyRead, VirtualKeyUpdate
from tollhouse.web.validation import parse


async def _changed(request: Request) -> None:
    await services(request).admission.reload()


def _read(view: Any, request: Request) -> VirtualKeyRead:
    admission: Any = services(request).admission  # the meter: budgets' spend so far
    return key_read(view, admission)


@page
async def key_list(request: Request, who: Visitor) -> Response:
    team_id = request.query_params.get("team_id") or None
    customer_id = request.query_params.get("customer_id") or None
    async with services(request).engine.connect() as conn:
        views = await service.list_keys(conn, team_id=team_id, customer_id=customer_id)
    keys = sorted((_read(v, request) for v in views), key=lambda k: k.name.lower())
    context = {"title": "Virtual keys", "nav": "keys", "keys": keys, "names": names(request)}
    return html(request, "keys.html", context, who)


def _body(form: forms.Form, *, creating: bool) -> dict[str, Any]:
    parent = forms.text(form, "parent") or ""
    kind, _, parent_id = parent.partition(":")
    body: dict[str, Any] = {
        "name": forms.text(form, "name"),
        "description": forms.text(form, "description"),
        "team_id": parent_id if kind == "team" else None,
        "customer_id": parent_id if kind == "customer" else None,
        "allowed_models": forms.words(form, "allowed_models"),
        "allowed_providers": forms.words(form, "allowed_providers"),
        "tags": forms.words(form, "tags"),
        "max_parallel_requests": forms.integer(
            form, "max_parallel_requests", "max_parallel_requests"
        ),
        "expires_at": forms.text(form, "expires_at"),
        "is_active": forms.checked(form, "is_active"),
        **forms.limits(form, creating=creating),
    }
    if creating:
        return {name: value for name, value in body.items() if value is not None}
    return body


def _form_page(
    request: Request, who: Visitor, key: VirtualKeyRead | None, form: forms.Form | None,
    error: TollhouseError | None = None,
) -> Response:  # fmt: skip
    n = names(request)
    context = {
        "title": f"Key {key.name}" if key else "New virtual key",
        "nav": "keys",
        "key": key,
        "form": form if form is not None else _form_of(key),
        "error": error,
        "teams": n.choices("team"),
        "customers": n.choices("customer"),
    }
    return html(request, "key_form.html", context, who, error.status_code if error else 200)


def _form_of(key: VirtualKeyRead | None) -> forms.Form:
    """The form's fields, filled from a key (blank for a new one)."""
    if key is None:
        return {"is_active": "on"}
    parent = f"team:{key.team_id}" if key.team_id else (
        f"customer:{key.customer_id}" if key.customer_id else "")  # fmt: skip
    return {
        "name": key.name,
        "description": key.description or "",
        "parent": parent,
        "allowed_models": ", ".join(key.allowed_models or []),
        "allowed_providers": ", ".join(key.allowed_providers or []),
        "tags": ", ".join(key.tags or []),
        "max_parallel_requests": str(key.max_parallel_requests or ""),
        "expires_at": key.expires_at.strftime("%Y-%m-%dT%H:%M") if key.expires_at else "",
        "is_active": "on" if key.is_active else "",
        **forms.limits_form(key.budget, key.rate_limit),
    }


@page
async def key_new(request: Request, who: Visitor) -> Response:
    if request.method == "GET":
        return _form_page(request, who, None, None)
    form = await form_text(request)
    try:
        body = parse(VirtualKeyCreate, _body(form, creating=True))
        async with services(request).engine.begin() as conn:
            view = await service.create_key(conn, body)
    except TollhouseError as exc:
        return _form_page(request, who, None, form, exc)
    await _changed(request)
    return _shown_once(request, who, _read(view, request), "created")


@page
async def key_edit(request: Request, who: Visitor) -> Response:
    key_id = request.path_params["id"]
    if request.method == "GET":
        async with services(request).engine.connect() as conn:
            view = await service.get_key(conn, key_id)
        return _form_page(request, who, _read(view, request), None)
    form = await form_text(request)
    try:
        body = parse(VirtualKeyUpdate, _body(form, creating=False))
        async with services(request).engine.begin() as conn:
            await service.update_key(conn, key_id, body)
    except TollhouseError as exc:
        async with services(request).engine.connect() as conn:
            view = await service.get_key(conn, key_id)
        return _form_page(request, who, _read(view, request), form, exc)
    await _changed(request)
    return RedirectResponse(f"/ui/keys/{key_id}?saved=1", 303)


@page
async def key_rotate(request: Request, who: Visitor) -> Response:
    async with services(request).engine.begin() as conn:
        view = await service.rotate_key(conn, request.path_params["id"])
    await _changed(request)
    return _shown_once(request, who, _read(view, request), "rotated")


@page
async def key_revoke(request: Request, who: Visitor) -> Response:
    """Revoked: refused from the next request on, kept (with its history) until deleted;
    posting ``active=1`` makes it work again."""
    key_id = request.path_params["id"]
    active = (await form_text(request)).get("active") == "1"
    async with services(request).engine.begin() as conn:
        await service.update_key(conn, key_id, VirtualKeyUpdate(is_active=active))
    await _changed(request)
    return RedirectResponse(f"/ui/keys/{key_id}?saved=1", 303)


@page
async def key_delete(request: Request, who: Visitor) -> Response:
    async with services(request).engine.begin() as conn:
        await service.delete_key(conn, request.path_params["id"])
    await _changed(request)
    return RedirectResponse("/ui/keys?deleted=1", 303)


def _shown_once(request: Request, who: Visitor, key: VirtualKeyRead, what: str) -> Response:
    context = {"title": f"Key {key.name}", "nav": "keys", "key": key, "what": what}
    return html(request, "key_value.html", context, who)
