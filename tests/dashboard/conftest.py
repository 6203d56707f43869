"""The dashboard's fixtures: a gateway with an admin and a viewer key, in-process for the
access rules, and under a real uvicorn on loopback for the browser (Debian's
``chromium`` driven by Playwright; never a downloaded browser).

Every page a browser test visits is screenshotted into ``build/dashboard-screenshots``
(a CI artifact), and any console error or uncaught exception fails the test.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.support import LiveServer

from tollhouse.app import Tollhouse, create_app
from tollhouse.config import Settings

ADMIN_KEY = "dashboard-admin-key-" + "a" * 24
VIEWER_KEY = "dashboard-viewer-key-" + "v" * 24
CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parents[2] / "build" / "dashboard-screenshots"


@pytest.fixture
def ui_settings(make_settings: Any) -> Settings:
    settings: Settings = make_settings(
        admin_key=ADMIN_KEY, viewer_key=VIEWER_KEY, allow_anonymous=False
    )
    return settings


@pytest.fixture
async def ui_app(ui_settings: Settings) -> AsyncIterator[Tollhouse]:
    application = create_app(ui_settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def ui(ui_app: Tollhouse) -> AsyncIterator[httpx.AsyncClient]:
    """A browser-like client of the in-process app: no JSON content type, cookies kept."""
    transport = httpx.ASGITransport(app=ui_app, client=("127.0.0.1", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
        yield client


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html[:2000]
    return found.group(1)


async def log_in(client: httpx.AsyncClient, key: str = ADMIN_KEY) -> httpx.Response:
    page = await client.get("/ui/login")
    form = {"csrf": csrf_of(page.text), "key": key, "next": "/ui/keys"}
    return await client.post("/ui/login", data=form)


# --- the browser -------------------------------------------------------------------------


# Per module, not per session: Playwright's sync API keeps an event loop running in
# this thread while it is started, and every async test run meanwhile (another module's,
# on the same xdist worker) fails to start its own ("Runner.run() cannot be called from
# a running event loop"). Stopped when the module's tests are done, it leaves none.
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: scripts/test installs Debian's chromium")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        launched = pw.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox"] if os.geteuid() == 0 else [],
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    shutil.rmtree(SHOTS, ignore_errors=True)
    SHOTS.mkdir(parents=True, exist_ok=True)
    return SHOTS


@pytest.fixture
def live_ui(ui_settings: Settings) -> Iterator[LiveServer]:
    with LiveServer(ui_settings) as server:
        yield server


class Tab:
    """One browser context on the live server: its page, the console errors and
    uncaught exceptions seen (none may be), and a screenshot per visited page."""

    def __init__(self, browser: Any, base: str, shots: Path, name: str, width: int) -> None:
        self.context = browser.new_context(base_url=base, viewport={"width": width, "height": 900})
        self.page = self.context.new_page()
        self.page.set_default_timeout(10_000)
        self.errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        self.page.on(
            "console",
            lambda msg: self.errors.append(f"console: {msg.text}") if msg.type == "error" else None,
        )
        self._shots, self._name, self._count = shots, name, 0

    def shot(self, label: str) -> None:
        self._count += 1
        path = self._shots / f"{self._name}-{self._count:02d}-{label}.png"
        self.page.screenshot(path=str(path), full_page=True)

    def log_in(self, key: str = ADMIN_KEY) -> None:
        self.page.goto("/ui")
        self.page.get_by_test_id("login-key").fill(key)
        self.page.get_by_test_id("login-submit").click()
        self.page.wait_for_url("**/ui")

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def tab(browser: Any, live_ui: LiveServer, screenshots: Path, request: Any) -> Iterator[Tab]:
    opened = Tab(browser, live_ui.url, screenshots, request.node.name, 1280)
    try:
        yield opened
        assert opened.errors == [], opened.errors
    finally:
        opened.close()
