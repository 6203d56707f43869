"""An ASGI response for SSE that notices a departed client at once, and always ends.

Starlette's ``StreamingResponse`` only learns of a disconnect on its next ``send`` under
ASGI 2.4, which may be long after the client left a slow generation. This response
watches ``receive`` for ``http.disconnect`` while it streams and cancels the producer,
whose ``finally`` closes the upstream connection and records what was streamed.

However the response ends, its chunks are closed, including when the response start
cannot be sent (the client left before the first byte): a never-started async generator
ignores ``aclose()``, so the gateway hands over a ``ClosingStream`` whose ``aclose`` ends
the request either way.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable

from starlette.types import Receive, Scope, Send


class ClosingStream:
    """Chunks from ``chunks``; ``aclose`` closes them and then calls ``on_close``.

    ``on_close`` must be idempotent: the generator's own ``finally`` usually calls it
    first. Iterating hands out the generator itself, so chunks cost no extra frame.
    """

    __slots__ = ("_chunks", "_on_close")

    def __init__(self, chunks: AsyncGenerator[bytes, None], on_close: Callable[[], None]) -> None:
        self._chunks = chunks
        self._on_close = on_close

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks

    async def __anext__(self) -> bytes:
        return await self._chunks.__anext__()

    async def aclose(self) -> None:
        try:
            await self._chunks.aclose()
        finally:
            self._on_close()


class EventStreamResponse:
    def __init__(self, chunks: AsyncIterator[bytes], headers: dict[str, str]) -> None:
        self._chunks = chunks
        self._headers = [(b"content-type", b"text/event-stream; charset=utf-8")] + [
            (k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self._headers})
        except BaseException:
            await self._close()
            raise
        pump = asyncio.ensure_future(self._pump(send))
        watch = asyncio.ensure_future(_wait_for_disconnect(receive))
        try:
            await asyncio.wait((pump, watch), return_when=asyncio.FIRST_COMPLETED)
        finally:
            try:
                for task in (pump, watch):
                    if not task.done():
                        task.cancel()
                with contextlib.suppress(asyncio.CancelledError, OSError):
                    await pump
                with contextlib.suppress(asyncio.CancelledError):
                    await watch
            finally:
                # Also when the pump failed, or was cancelled before its first step.
                await self._close()

    async def _pump(self, send: Send) -> None:
        async for chunk in self._chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _close(self) -> None:
        aclose = getattr(self._chunks, "aclose", None)
        if aclose is not None:
            await aclose()


async def _wait_for_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
