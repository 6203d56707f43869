"""Policies: list, create, edit, enable or disable, delete, and a dry run, through
``policies.service`` and ``policies.trial`` with the admin API's bodies
(docs/policies.md). A condition is compiled by the same call as ``POST /api/policies``,
so an invalid one is refused with the API's message, shown next to the condition with
the text as it was typed."""

from __future__ import annotations

import json
from typing import Any, Literal

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from tollhouse.dashboard import forms
from tollhouse.dashboard.access import Visitor
from tollhouse.dashboard.pages import asking, form_text, names, page
from tollhouse.dashboard.render import html
from tollhouse.errors import InvalidJSON, TollhouseError, ValidationFailed
from tollhouse.policies import service, trial
from tollhouse.policies.routes import PolicyServices
from tollhouse.policies.schemas import (
    PolicyCreate,
    PolicyRead,
    PolicyTest,
    PolicyUpdate,
    TestResult,
)
from tollhouse.web.bodies import loads_object
from tollhouse.web.validation import parse

ACTIONS = ("llm.request", "tool.execute", "sandbox.allocate", "*")
OWNERS: tuple[Literal["customer", "team", "key"], ...] = ("customer", "team", "key")


def _services(request: Request) -> PolicyServices:
    found: PolicyServices = request.app.services  # what /api/policies uses, proven in app.py
    return found


async def _changed(request: Request) -> None:
    """A write reloads this server's policies before the page answers, as the API's."""
    await _services(request).admission.reload()


async def _posted(request: Request) -> forms.Form:
    """The form's fields, the owners picker's several values joined (one field each
    otherwise: ``form_text`` keeps the last)."""
    form = await form_text(request)
    picked = (await request.form()).getlist("attach_owners")
    form["attach_owners"] = " ".join(v for v in picked if isinstance(v, str))
    return form


def _priority(form: forms.Form) -> Any:
    """A whole number, signed; anything else goes to the model as typed, so that the
    refusal is the API's own (``priority must be an integer, got string``)."""
    value = forms.text(form, "priority")
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return value


def _condition(form: forms.Form) -> str | None:
    """The condition as typed, but with the line ends a textarea posts (CRLF) as the
    API's clients send them; blank: none (always matches)."""
    value = form.get("condition", "").replace("\r\n", "\n")
    return value if value.strip() else None


def _attachments(form: forms.Form) -> list[dict[str, str]]:
    """Whom it applies to: the picked owners and the typed tags; nothing picked is
    everyone (the API's default)."""
    found: list[dict[str, str]] = []
    for picked in form.get("attach_owners", "").split():
        kind, _, owner_id = picked.partition(":")
        found.append({"type": kind, "id": owner_id})
    for tag in forms.words(form, "attach_tags") or []:
        found.append({"type": "tag", "tag": tag})
    if forms.checked(form, "attach_global") or not found:
        found.insert(0, {"type": "global"})
    return found


def _body(form: forms.Form, *, creating: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": forms.text(form, "name"),
        "description": forms.text(form, "description"),
        "action": forms.text(form, "action"),
        "effect": forms.text(form, "effect"),
        "engine": forms.text(form, "engine"),
        "condition": _condition(form),
        "rule": forms.text(form, "rule"),
        "priority": _priority(form),
        "attachments": _attachments(form),
        "enabled": forms.checked(form, "enabled"),
        "fail_mode": forms.text(form, "fail_mode"),
    }
    if creating:
        return {name: value for name, value in body.items() if value is not None}
    kept = ("name", "action", "effect", "engine", "priority", "fail_mode")  # never null
    return {name: value for name, value in body.items() if value is not None or name not in kept}


def _form_of(policy: PolicyRead | None) -> forms.Form:
    if policy is None:
        return {"enabled": "on", "attach_global": "on", "engine": "cel", "priority": "0",
                "fail_mode": "closed", "effect": "deny", "action": "llm.request"}  # fmt: skip
    owners = [f"{a.type}:{a.id}" for a in policy.attachments if a.type in OWNERS]
    tags = [a.tag or "" for a in policy.attachments if a.type == "tag"]
    return {
        "name": policy.name,
        "description": policy.description or "",
        "action": policy.action,
        "effect": policy.effect,
        "engine": policy.engine,
        "condition": policy.condition or "",
        "rule": policy.rule or "",
        "priority": str(policy.priority),
        "attach_global": "on" if any(a.type == "global" for a in policy.attachments) else "",
        "attach_owners": " ".join(owners),
        "attach_tags": ", ".join(tags),
        "enabled": "on" if policy.enabled else "",
        "fail_mode": policy.fail_mode,
    }


def _form_page(
    request: Request, who: Visitor, policy: PolicyRead | None, form: forms.Form | None,
    error: TollhouseError | None = None, **more: Any,
) -> Response:  # fmt: skip
    n = names(request)
    context = {
        "title": f"Policy {policy.name}" if policy else "New policy",
        "nav": "policies",
        "policy": policy,
        "form": form if form is not None else _form_of(policy),
        "error": error,
        "actions": ACTIONS,
        "engines": sorted(_services(request).policies.engines),
        "owners": [(kind, n.choices(kind)) for kind in OWNERS],
        "keys": n.choices("key"),
        "trial": None,
        "trial_form": {"input": "{}", "key_id": ""},
        "trial_error": None,
        "trial_input": "",
        **more,
    }
    failed = error or more.get("trial_error")
    return html(request, "policy_form.html", context, who, failed.status_code if failed else 200)


@page
async def policy_list(request: Request, who: Visitor) -> Response:
    async with _services(request).engine.connect() as conn:
        rows = await service.list_policies(conn)
    context = {"title": "Policies", "nav": "policies", "names": names(request),
               "policies": [PolicyRead.from_row(row) for row in rows]}  # fmt: skip
    return html(request, "policies.html", context, who)


@page
async def policy_new(request: Request, who: Visitor) -> Response:
    if request.method == "GET":
        return _form_page(request, who, None, None)
    form = await _posted(request)
    services = _services(request)
    try:
        body = parse(PolicyCreate, _body(form, creating=True))
        async with services.engine.begin() as conn:
            row = await service.create_policy(conn, body, services.policies.engines)
    except TollhouseError as exc:
        return _form_page(request, who, None, form, exc)
    await _changed(request)
    return RedirectResponse(f"/ui/policies/{row.id}?saved=1", 303)


async def _read(request: Request, policy_id: str) -> PolicyRead:
    async with _services(request).engine.connect() as conn:
        return PolicyRead.from_row(await service.get_policy(conn, policy_id))


@page
async def policy_edit(request: Request, who: Visitor) -> Response:
    policy_id = request.path_params["id"]
    if request.method == "GET":
        return _form_page(request, who, await _read(request, policy_id), None)
    form = await _posted(request)
    services = _services(request)
    try:
        body = parse(PolicyUpdate, _body(form, creating=False))
        async with services.engine.begin() as conn:
            await service.update_policy(conn, policy_id, body, services.policies.engines)
    except TollhouseError as exc:
        return _form_page(request, who, await _read(request, policy_id), form, exc)
    await _changed(request)
    return RedirectResponse(f"/ui/policies/{policy_id}?saved=1", 303)


@page
async def policy_enable(request: Request, who: Visitor) -> Response:
    """``enabled=1`` switches it on, anything else off: a merge of that field alone."""
    policy_id = request.path_params["id"]
    enabled = (await form_text(request)).get("enabled") == "1"
    services = _services(request)
    async with services.engine.begin() as conn:
        body = parse(PolicyUpdate, {"enabled": enabled})
        await service.update_policy(conn, policy_id, body, services.policies.engines)
    await _changed(request)
    return RedirectResponse(f"/ui/policies/{policy_id}?saved=1", 303)


@page
async def policy_delete(request: Request, who: Visitor) -> Response:
    async with _services(request).engine.begin() as conn:
        await service.delete_policy(conn, request.path_params["id"])
    await _changed(request)
    return RedirectResponse("/ui/policies?deleted=1", 303)


def _trial_body(request: Request, form: forms.Form) -> PolicyTest:
    """The dry run's body: the input as the API's body reader decodes JSON (exact
    numbers, the same depth bound), then the API's model."""
    text = form.get("input", "").strip() or "{}"
    depth = _services(request).settings.max_json_depth
    try:
        given = loads_object(text.encode(), depth, exact=True)
    except InvalidJSON as exc:
        raise ValidationFailed(f"input: {exc.message}", param="input") from None
    return parse(PolicyTest, {"input": given, "key_id": forms.text(form, "key_id")})


@asking
async def policy_test(request: Request, who: Visitor) -> Response:
    """``POST /api/policies/{id}/test`` on the page: what the policy alone does. A dry
    run writes nothing, but it is posted (the input can be long), so viewers do not."""
    policy_id = request.path_params["id"]
    form = await form_text(request)
    services = _services(request)
    async with services.engine.connect() as conn:
        row = await service.get_policy(conn, policy_id)
    policy = PolicyRead.from_row(row)
    try:
        body = _trial_body(request, form)
        async with services.engine.connect() as conn:
            found = await trial.dry_run(conn, row, body.input, body.key_id,
                                        services.policies.engines)  # fmt: skip
    except TollhouseError as exc:
        return _form_page(request, who, policy, None, trial_form=form, trial_error=exc)
    result = TestResult.model_validate(found)
    seen = json.dumps(result.model_dump(mode="json")["input"], indent=2, sort_keys=True)
    return _form_page(request, who, policy, None, trial_form=form, trial=result, trial_input=seen)
