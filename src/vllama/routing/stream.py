"""The commit point of a streamed answer, and a stream that ends its lease.

``peek`` waits for an upstream body's first chunk (bounded by the first-byte
timeout) so that an attempt fails over if it never comes; ``Leased`` relays
the rest and, however the stream ends (done, error, client gone, or never
started), closes the upstream answer and releases the backend's lease.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from vllama.routing.router import Lease
from vllama.upstream.client import UpstreamResponse


class Peeked:
    """An upstream body whose first chunk has arrived."""

    def __init__(
        self, response: UpstreamResponse, first: bytes, rest: AsyncIterator[bytes]
    ) -> None:
        self.response = response
        self.first = first
        self.rest = rest


async def peek(response: UpstreamResponse) -> Peeked:
    """The first chunk of ``response``; on failure the response is closed and the
    error (ours: ``UpstreamTimeout``/``UpstreamUnreachable``) raised."""
    rest = response.chunks()
    try:
        first = await anext(rest, b"")
    except BaseException:
        await rest.aclose()  # type: ignore[attr-defined]
        response.close()
        raise
    return Peeked(response, first, rest)


class Leased:
    """An async iterator of bytes that releases ``lease`` when it is over."""

    def __init__(
        self, chunks: AsyncIterator[bytes], lease: Lease, response: UpstreamResponse | None = None
    ) -> None:
        self._chunks = chunks
        self._lease = lease
        self._response = response

    def __aiter__(self) -> Leased:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await anext(self._chunks)
        except StopAsyncIteration:
            self._lease.release()
            raise

    async def aclose(self) -> None:
        try:
            aclose = getattr(self._chunks, "aclose", None)
            if aclose is not None:
                await aclose()
        finally:
            if self._response is not None:
                self._response.close()
            self._lease.release()
