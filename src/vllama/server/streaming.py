"""Streams to the client: flushed as made, cancelled when the client leaves.

``LiveStream`` is a plain ASGI response that sends each chunk the moment the
iterator yields it and, unlike a response that only notices a disconnect on
its next write, watches ``http.disconnect`` the whole time. A client that
goes away while the engine is still thinking cancels the pump at once; the
iterator's ``finally`` then closes the upstream connection, and the engine
aborts the request and frees its KV cache.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping

from starlette.types import Receive, Scope, Send

STREAM_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


class LiveStream:
    def __init__(
        self,
        chunks: AsyncIterator[bytes],
        *,
        media_type: str,
        status: int = 200,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.chunks = chunks
        self.status = status
        merged = {**STREAM_HEADERS, **(headers or {}), "content-type": media_type}
        self.raw_headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in merged.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        pump = asyncio.ensure_future(self._pump(send))
        watch = asyncio.ensure_future(_wait_disconnect(receive))
        try:
            await asyncio.wait((pump, watch), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (pump, watch):
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await pump
            with contextlib.suppress(asyncio.CancelledError):
                await watch
            aclose = getattr(self.chunks, "aclose", None)
            if aclose is not None:
                await aclose()

    async def _pump(self, send: Send) -> None:
        await send(
            {"type": "http.response.start", "status": self.status, "headers": self.raw_headers}
        )
        async for chunk in self.chunks:
            if chunk:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _wait_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
