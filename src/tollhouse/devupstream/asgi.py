"""The few raw-ASGI primitives the app needs: read a body, answer, notice a hang-up.

No framework: under hundreds of concurrent streams the upstream must stay cheaper than
the gateway it is measuring, so a response is two ``send`` calls and a stream is one
``send`` per chunk plus one watcher task.
"""

from __future__ import annotations

import asyncio

from starlette.types import Receive, Send

JSON_CONTENT_TYPE = b"application/json"
SSE_HEADERS: list[tuple[bytes, bytes]] = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
]


class ClientGone(Exception):
    """The client hung up before its request body arrived; nothing left to answer."""


async def read_body(receive: Receive) -> bytes:
    """The whole request body (dev requests are small, so no size cap)."""
    message = await receive()
    if message["type"] == "http.disconnect":
        raise ClientGone
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        return body
    chunks = [body]
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def send_bytes(
    send: Send,
    status: int,
    body: bytes,
    headers: list[tuple[bytes, bytes]],
    content_type: bytes = JSON_CONTENT_TYPE,
) -> None:
    """A complete response with ``content-length``, so uvicorn skips chunked encoding."""
    all_headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        *headers,
    ]
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def pause(milliseconds: float) -> None:
    if milliseconds > 0:
        await asyncio.sleep(milliseconds / 1000)


class DisconnectWatch:
    """Cancel the current task when the client hangs up mid-stream.

    uvicorn's ``send`` silently drops writes after a disconnect, so the only prompt
    signal is ``http.disconnect`` on ``receive``; a watcher task waits for it and
    cancels the streaming task, which checks ``client_left`` to tell that apart from
    a server shutdown. Use::

        watch = DisconnectWatch(receive)
        try:
            ...                     # stream; call watch.finish() before the last send
        except asyncio.CancelledError:
            if not watch.client_left:
                raise
            watch.absorb()
        finally:
            await watch.stop()
    """

    def __init__(self, receive: Receive) -> None:
        task = asyncio.current_task()
        assert task is not None, "DisconnectWatch needs a running task"
        self.client_left = False
        self._finished = False
        self._task = task
        self._watcher = asyncio.create_task(self._watch(receive))

    async def _watch(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        # After the last send the server reports a disconnect too; that one is normal.
        if not self._finished:
            self.client_left = True
            self._task.cancel()

    def finish(self) -> None:
        """The response is complete from here on; a hang-up now is not a cancel."""
        self._finished = True

    def absorb(self) -> None:
        """Swallow the cancellation this watch caused, keeping the task's count right."""
        self._task.uncancel()

    async def stop(self) -> None:
        self._finished = True
        self._watcher.cancel()
        # wait() rather than await: the watcher's own CancelledError is not ours.
        await asyncio.wait([self._watcher])
