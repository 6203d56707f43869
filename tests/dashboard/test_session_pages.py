"""Agent sessions through the dashboard, driven by real sessions (the in-process
conversation worker asks the dev upstream): the list with tenants by name, a session's
events, and its live stream — Server-Sent Events replaying the log after an event id,
``Last-Event-ID`` first, then following new events, none twice (in-process: the stream
is read from the app itself as it is sent, since httpx's ASGI transport would wait for
an endless answer to end)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from tests.dashboard.conftest import ADMIN_KEY, VIEWER_KEY, log_in

from tollhouse.dashboard.access import SESSION_COOKIE

ADMIN = {"authorization": f"Bearer {ADMIN_KEY}"}


async def _key(ui, customer: str) -> str:
    made = await ui.post("/api/governance/customers", json={"name": customer}, headers=ADMIN)
    body = {"name": f"{customer}-agent", "customer_id": made.json()["customer"]["id"]}
    key = await ui.post("/api/governance/virtual-keys", json=body, headers=ADMIN)
    return str(key.json()["virtual_key"]["value"])


async def _say(ui, key: str, message: str, session_id: str | None = None) -> dict[str, str]:
    body: dict[str, Any] = {"message": message}
    if session_id is not None:
        body["session_id"] = session_id
    sent = await ui.post("/v1/session/message", json=body,
                         headers={"authorization": f"Bearer {key}"})  # fmt: skip
    assert sent.status_code == 200, sent.text
    return dict(sent.json())


async def _log(ui, key: str, session_id: str, turns: int) -> list[dict[str, Any]]:
    """The session's log, oldest first, once ``turns`` turns are done (the API's read)."""
    async with asyncio.timeout(15):
        while True:
            read = await ui.get(f"/v1/session/{session_id}/events?limit=1000",
                                headers={"authorization": f"Bearer {key}"})  # fmt: skip
            found = list(reversed(read.json()["events"]))
            if sum(e["type"] == "done" for e in found) >= turns:
                return found
            await asyncio.sleep(0.05)


class Stream:
    """One ``text/event-stream`` answer of the app, read event by event as it is sent."""

    def __init__(self) -> None:
        self.status = 0
        self.headers: dict[str, str] = {}
        self.chunks: asyncio.Queue[bytes] = asyncio.Queue()
        self.buffer = ""
        self.gone = asyncio.Event()

    async def event(self) -> dict[str, Any]:
        """The next event (comments and the ``retry:`` skipped): its id and data."""
        while True:
            while "\n\n" not in self.buffer:
                async with asyncio.timeout(10):
                    self.buffer += (await self.chunks.get()).decode()
            block, self.buffer = self.buffer.split("\n\n", 1)
            fields = dict(line.split(": ", 1) for line in block.split("\n") if ": " in line)
            if "data" in fields:
                return {"id": fields.get("id"), **json.loads(fields["data"])}


@asynccontextmanager
async def streaming(app, cookie: str, path: str, **headers: str) -> AsyncIterator[Stream]:
    stream = Stream()
    target, _, query = path.partition("?")
    scope = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1", "method": "GET", "scheme": "http", "path": target,
        "raw_path": target.encode(), "query_string": query.encode(), "root_path": "",
        "headers": [(b"host", b"127.0.0.1"), (b"cookie", f"{SESSION_COOKIE}={cookie}".encode()),
                    *((k.encode(), v.encode()) for k, v in headers.items())],
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 80),
    }  # fmt: skip

    async def receive() -> dict[str, Any]:
        await stream.gone.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            stream.status = message["status"]
            stream.headers = {k.decode(): v.decode() for k, v in message["headers"]}
        elif message.get("body"):
            stream.chunks.put_nowait(message["body"])

    task = asyncio.create_task(app(scope, receive, send))
    try:
        yield stream
    finally:
        stream.gone.set()  # the client goes: the stream must end, and it does
        async with asyncio.timeout(5):
            await task


async def test_the_stream_replays_after_an_id_then_follows_live_without_duplicates(ui, ui_app):
    key = await _key(ui, "Acme")
    opened = await _say(ui, key, "hello")
    session_id, first = opened["session_id"], opened["event_id"]
    logged = await _log(ui, key, session_id, turns=1)
    assert logged[0]["event_id"] == first and len(logged) >= 3
    await log_in(ui)
    cookie = ui.cookies[SESSION_COOKIE]
    path = f"/ui/sessions/{session_id}/stream?after={first}"

    async with streaming(ui_app, cookie, path) as stream:
        replayed = [await stream.event() for _ in logged[1:]]
        assert stream.status == 200
        assert stream.headers["content-type"].startswith("text/event-stream")
        # The log after the anchor, in order, each event's id its log event_id.
        assert [e["id"] for e in replayed] == [e["event_id"] for e in logged[1:]]
        assert [e["seq"] for e in replayed] == [e["seq"] for e in logged[1:]]
        # A new message: its event and its reply arrive live, after the replay.
        again = await _say(ui, key, "and again", session_id)
        live = [await stream.event() for _ in range(2)]
        assert live[0]["id"] == again["event_id"] and live[0]["summary"] == "and again"
        assert live[1]["seq"] == live[0]["seq"] + 1 and live[1]["kind"] == "assistant_event"
        logged = await _log(ui, key, session_id, turns=2)
        while len(replayed) + len(live) < len(logged) - 1:
            live.append(await stream.event())
    assert [e["id"] for e in replayed + live] == [e["event_id"] for e in logged[1:]]

    # EventSource reconnecting: Last-Event-ID wins over the page's ?after=, and what
    # follows it comes once.
    middle = logged[len(logged) // 2]["event_id"]
    async with streaming(ui_app, cookie, path, **{"last-event-id": middle}) as stream:
        resumed = [await stream.event() for _ in logged[len(logged) // 2 + 1 :]]
        assert [e["id"] for e in resumed] == [e["event_id"] for e in logged[len(logged) // 2 + 1 :]]
        third = await _say(ui, key, "third", session_id)
        assert (await stream.event())["id"] == third["event_id"]  # nothing again before it


async def test_an_anchor_not_of_the_session_is_a_404_and_no_login_no_stream(ui, ui_app):
    key = await _key(ui, "Acme")
    one = await _say(ui, key, "hello")
    other = await _say(ui, key, "another session")
    await log_in(ui)
    stale = await ui.get(f"/ui/sessions/{one['session_id']}/stream?after={other['event_id']}")
    assert stale.status_code == 404
    assert (await ui.get("/ui/sessions/ses_nope00000/stream")).status_code == 404
    ui.cookies.clear()
    refused = await ui.get(f"/ui/sessions/{one['session_id']}/stream")
    assert refused.status_code == 303 and refused.headers["location"].startswith("/ui/login")


async def test_the_list_and_the_session_page(ui, ui_app):
    acme, globex = await _key(ui, "Acme"), await _key(ui, "Globex")
    older = (await _say(ui, acme, "hello"))["session_id"]
    newer = (await _say(ui, globex, "hi there"))["session_id"]
    logged = await _log(ui, acme, older, turns=1)
    await log_in(ui, VIEWER_KEY)  # a viewer reads sessions too
    listing = await ui.get("/ui/sessions")
    assert listing.status_code == 200
    assert listing.text.index(newer) < listing.text.index(older)  # newest first
    assert "customer Acme" in listing.text and "customer Globex" in listing.text
    assert f'href="/ui/logs?session_id={older}"' in listing.text

    page = await ui.get(f"/ui/sessions/{older}")
    assert page.status_code == 200
    assert page.text.count('data-testid="event-row"') == len(logged)
    assert f'data-session-stream="/ui/sessions/{older}/stream?after={logged[-1]["event_id"]}"' in (
        page.text
    )
    assert f'href="/ui/logs?session_id={older}"' in page.text
    # Its model call is in the request log, under the session.
    await ui_app.services.recorder.flush()  # the ledger writes in batches
    log = await ui.get(f"/ui/logs?session_id={older}")
    assert log.status_code == 200 and 'data-testid="log-row"' in log.text
    assert (await ui.get("/ui/sessions/ses_nope00000")).status_code == 404
