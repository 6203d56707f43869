"""The sandbox pool through the dashboard: counts and rows equal to what the admin API
answers, a status filter and cursor pages, leases with their tracks, and the operator's
actions (end a lease, auto-expire, cleanup) doing what the API's do; the viewer looks
and cannot act (in-process)."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from tests.dashboard.conftest import ADMIN_KEY, VIEWER_KEY, csrf_of, log_in

from tollhouse.config import Settings

ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}


@pytest.fixture
def ui_settings(make_settings: Any) -> Settings:
    # No grace after a lab, and a reaper that does not pass during the test: the page's
    # actions are the only ones that expire and clean up.
    settings: Settings = make_settings(
        admin_key=ADMIN_KEY, viewer_key=VIEWER_KEY, allow_anonymous=False,
        sandbox_grace_minutes=0, sandbox_reaper_interval_s=3600,
    )  # fmt: skip
    return settings


async def _api(ui, method: str, path: str, body: Any = None, **headers: str) -> Any:
    response = await ui.request(method, f"/api{path}", json=body, headers={**ADMIN, **headers})
    assert response.status_code < 300, response.text
    return response.json()


async def _lease(ui, token: str, track: str, hours: float = 2) -> dict[str, Any]:
    headers = {"authorization": f"Bearer {token}", "x-track-id": track}
    made = await ui.post("/v1/allocate", json={"lab_duration_hours": hours}, headers=headers)
    assert made.status_code == 201, made.text
    return dict(made.json()["sandbox"])


def _rows(text: str) -> list[tuple[str, str]]:
    return re.findall(r'data-testid="sandbox-row" data-id="([^"]+)" data-status="([^"]+)"', text)


def _count(text: str, status: str) -> int:
    found = re.search(rf'data-testid="count-{status}">([\d,]+)<', text)
    assert found, status
    return int(found.group(1).replace(",", ""))


async def _act(ui, path: str, **form: str):
    page = await ui.get("/ui/sandboxes")
    return await ui.post(path, data={"csrf": csrf_of(page.text), **form})


async def test_the_pool_and_its_leases_as_the_api_shows_them(ui):
    await log_in(ui)
    await _api(ui, "POST", "/sandboxes/seed", {"count": 55})
    token = (await _api(ui, "POST", "/broker-tokens", {"name": "labs"}))["value"]
    leased = [await _lease(ui, token, f"track-{n}") for n in range(2)]

    page = await ui.get("/ui/sandboxes")
    assert page.status_code == 200
    stats = await _api(ui, "GET", "/sandboxes/stats")
    for status, n in stats["by_status"].items():
        assert _count(page.text, status) == n
    assert _count(page.text, "total") == stats["total"] == 55

    # Every page of the list, by its cursor, is the API's list in its order.
    listed = [s["id"] for s in (await _api(ui, "GET", "/sandboxes?limit=1000"))["sandboxes"]]
    shown: list[str] = []
    path: str | None = "/ui/sandboxes"
    while path is not None:
        page = await ui.get(path)
        shown += [sandbox_id for sandbox_id, _ in _rows(page.text)]
        more = re.search(r'href="(/ui/sandboxes\?[^"]+)" data-testid="next-page"', page.text)
        path = more.group(1).replace("&amp;", "&") if more else None
    assert shown == listed

    # The leases: the filter, each with its track and purpose.
    leases = await ui.get("/ui/sandboxes?status=allocated")
    assert sorted(_rows(leases.text)) == sorted((s["id"], "allocated") for s in leased)
    assert "track-0" in leases.text and "track-1" in leases.text and ">lab<" in leases.text
    assert (await ui.get("/ui/sandboxes?status=nonsense")).status_code == 400


async def test_the_actions_do_what_the_api_does(ui):
    await log_in(ui)
    await _api(ui, "POST", "/sandboxes/seed", {"count": 3})
    token = (await _api(ui, "POST", "/broker-tokens", {"name": "labs"}))["value"]
    ending = await _lease(ui, token, "ending")
    short = await _lease(ui, token, "short", hours=0.0001)  # due in a third of a second

    done = await _act(ui, f"/ui/sandboxes/{ending['id']}/end", status="allocated")
    assert done.status_code == 303
    assert done.headers["location"].startswith("/ui/sandboxes?did=mark-for-deletion")
    assert "status=allocated" in done.headers["location"]  # back to the list as it was
    one = await _api(ui, "GET", f"/sandboxes/{ending['id']}")
    assert one["sandbox"]["status"] == "pending_deletion"

    await asyncio.sleep(0.5)
    expired = await _act(ui, "/ui/sandboxes/auto-expire")
    assert expired.status_code == 303 and "expired=1" in expired.headers["location"]
    shown = await ui.get(expired.headers["location"])
    assert 'data-testid="did">auto-expire: 1 expired.' in shown.text
    assert (await _api(ui, "GET", f"/sandboxes/{short['id']}"))["sandbox"]["status"] == (
        "pending_deletion"
    )

    cleaned = await _act(ui, "/ui/sandboxes/cleanup")
    assert cleaned.status_code == 303 and "deleted=2" in cleaned.headers["location"]
    stats = await _api(ui, "GET", "/sandboxes/stats")
    assert stats["total"] == 1 and stats["by_status"]["available"] == 1
    page = await ui.get("/ui/sandboxes")
    assert _count(page.text, "total") == 1 and len(_rows(page.text)) == 1


async def test_the_viewer_cannot_act(ui):
    await _api(ui, "POST", "/sandboxes/seed", {"count": 1})
    (sandbox,) = (await _api(ui, "GET", "/sandboxes"))["sandboxes"]
    await log_in(ui, VIEWER_KEY)
    page = await ui.get("/ui/sandboxes")
    assert page.status_code == 200 and len(_rows(page.text)) == 1
    assert 'data-testid="sandbox-cleanup"' not in page.text
    assert 'data-testid="sandbox-end"' not in page.text
    token = csrf_of(page.text)
    for path in (f"/ui/sandboxes/{sandbox['id']}/end", "/ui/sandboxes/auto-expire",
                 "/ui/sandboxes/cleanup", "/ui/sandboxes/sync"):  # fmt: skip
        refused = await ui.post(path, data={"csrf": token})
        assert refused.status_code == 403, (path, refused.text[:300])
    after = await _api(ui, "GET", f"/sandboxes/{sandbox['id']}")
    assert after["sandbox"]["status"] == "available"
