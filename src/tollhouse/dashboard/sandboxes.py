"""Sandboxes: the pool's counts by status, its sandboxes (a status filter, cursor pages)
with their leases, and the operator's actions of the admin API — end one sandbox's
lease, auto-expire, cleanup, sync — through ``sandboxes.pool`` and the pool service
(docs/sandboxes.md, *Operating the pool*)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any, get_args
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from tollhouse.dashboard.access import Visitor
from tollhouse.dashboard.pages import page, query_without
from tollhouse.dashboard.render import html
from tollhouse.errors import ValidationFailed
from tollhouse.sandboxes import pool
from tollhouse.sandboxes.routes import SandboxServices
from tollhouse.sandboxes.schemas import SandboxRead, Status
from tollhouse.sandboxes.service import Report

PAGE_SIZE = 50
STATUSES: tuple[str, ...] = get_args(Status)
# What each action's report says, in the order shown (``Report``'s fields).
REPORTED = tuple(Report.__dataclass_fields__)


def _services(request: Request) -> SandboxServices:
    found: SandboxServices = request.app.services  # what /api/sandboxes uses, proven in app.py
    return found


def _status(request: Request) -> str | None:
    status = request.query_params.get("status") or None
    if status is not None and status not in STATUSES:
        raise ValidationFailed(f"status must be one of {', '.join(STATUSES)}", param="status")
    return status


@page
async def sandbox_list(request: Request, who: Visitor) -> Response:
    services = _services(request)
    status = _status(request)
    stats = await services.sandboxes.stats()
    async with services.engine.connect() as conn:
        rows, cursor = await pool.page(
            conn, status=status, backend=None, track_id=None, limit=PAGE_SIZE,
            cursor=request.query_params.get("cursor") or None,
        )  # fmt: skip
    report = {}
    for name in REPORTED:  # what the action just posted did (``_done``)
        value = request.query_params.get(name, "")
        if value.isdigit() and int(value):
            report[name] = int(value)
    context = {
        "title": "Sandboxes",
        "nav": "sandboxes",
        "stats": stats,
        "statuses": STATUSES,
        "status": status,
        "sandboxes": [SandboxRead.from_row(row) for row in rows],
        "next_query": query_without(request, "cursor", *REPORTED, "did", cursor=cursor)
        if cursor
        else None,
        "did": request.query_params.get("did"),
        "report": report,
        "back": query_without(request, "cursor", *REPORTED, "did"),
        "now": datetime.now(UTC),
        "expiring": expiring,
    }
    return html(request, "sandboxes.html", context, who)


def _done(what: str, report: Report, back: str) -> Response:
    """Back to the list (its filter kept), saying what the action did."""
    counts = {name: n for name, n in asdict(report).items() if n}
    query = urlencode({"did": what, **counts})
    return RedirectResponse(f"/ui/sandboxes?{query}{'&' + back if back else ''}", 303)


async def _back(request: Request) -> str:
    """The list's filter, posted with the action so the page comes back as it was."""
    status = (await request.form()).get("status")
    return urlencode({"status": status}) if isinstance(status, str) and status else ""


@page
async def sandbox_end(request: Request, who: Visitor) -> Response:
    """``POST /api/sandboxes/{id}/mark-for-deletion``: the lease ends (or the sandbox
    leaves the pool); the reaper deletes or recycles it."""
    sandbox_id = request.path_params["id"]
    async with _services(request).engine.begin() as conn:
        await pool.mark_for_deletion(conn, sandbox_id, None, datetime.now(UTC))
    return _done("mark-for-deletion", Report(), await _back(request))


@page
async def sandbox_auto_expire(request: Request, who: Visitor) -> Response:
    expired = await _services(request).sandboxes.auto_expire()
    return _done("auto-expire", Report(expired=expired), await _back(request))


@page
async def sandbox_cleanup(request: Request, who: Visitor) -> Response:
    report = await _services(request).sandboxes.cleanup()
    return _done("cleanup", report, await _back(request))


@page
async def sandbox_sync(request: Request, who: Visitor) -> Response:
    report = await _services(request).sandboxes.sync()
    return _done("sync", report, await _back(request))


def expiring(sandbox: SandboxRead, now: datetime) -> dict[str, Any]:
    """How long a lease has left, for people (``past`` once due: the reaper's next)."""
    if sandbox.expires_at is None:
        return {"left": None, "past": False}
    seconds = int((sandbox.expires_at - now).total_seconds())
    hours, rest = divmod(abs(seconds), 3600)
    return {"left": f"{hours} h {rest // 60:02d} min", "past": seconds <= 0}
