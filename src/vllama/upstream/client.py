"""HTTP to an engine: one connection pool, errors mapped to ours.

The pool is ours (``upstream/http1.py``, httptools underneath) rather than
aiohttp's or httpx's client: httpx's pool does work quadratic in open requests
and collapsed to ~570 req/s in front of a fast upstream on this kind of
machine, and aiohttp's client, which held ~4,600, still cost a third of the
gateway's CPU per relayed request (docs/PERFORMANCE.md). Transport failures
become ``UpstreamUnreachable``/``UpstreamTimeout`` here, where they enter, so
routes never see a socket error; an engine's own error answer becomes an
``UpstreamError`` carrying its status and message.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from vllama.errors import UpstreamError, UpstreamTimeout, UpstreamUnreachable
from vllama.translate.responses import openai_error_message
from vllama.upstream.http1 import ConnectionLost, Exchange, Pool

#: Headers of the client's request that may reach the engine. Everything else
#: (notably the client's Authorization) stays at the gateway.
FORWARDED_HEADERS = ("content-type", "accept", "x-request-id", "user-agent")


@dataclass(frozen=True)
class Timeouts:
    connect: float
    first_byte: float
    idle: float


class UpstreamResponse:
    """An engine's answer whose status is known and whose body is not yet read.

    The caller owns it: iterate ``chunks()`` (or ``read()``) and always
    ``close()``, which drops the connection if the body was not read to the end
    so that the engine sees the abort and frees the request's KV cache.
    """

    def __init__(self, exchange: Exchange, timeouts: Timeouts) -> None:
        self._exchange = exchange
        self._timeouts = timeouts
        self.status = exchange.status
        #: Lower-case names; repeated headers joined with ", ".
        self.headers = exchange.headers

    async def read(self) -> bytes:
        """The whole body; each wait for bytes is bounded by the first-byte timeout."""
        try:
            return await self._exchange.body(self._timeouts.first_byte)
        except TimeoutError as exc:
            raise UpstreamTimeout("engine did not answer in time") from exc
        except ConnectionLost as exc:
            raise UpstreamUnreachable(f"engine connection failed: {exc}") from exc
        finally:
            self.close()

    async def chunks(self) -> AsyncIterator[bytes]:
        """Body bytes as they arrive.

        The first wait is bounded by the first-byte timeout; each later gap by
        the idle timeout.
        """
        limit = self._timeouts.first_byte
        try:
            while chunk := await self._exchange.chunk(limit):
                yield chunk
                limit = self._timeouts.idle
        except TimeoutError as exc:
            raise UpstreamTimeout(f"engine stalled for more than {limit:g} s") from exc
        except ConnectionLost as exc:
            raise UpstreamUnreachable(f"engine connection lost: {exc}") from exc

    def close(self) -> None:
        self._exchange.release()

    def __del__(self) -> None:
        # A safety net for a path that drops an answer unread: its pool slot
        # and connection come back rather than leak until the pool is exhausted.
        self._exchange.release()


class Upstream:
    """The pooled client to the engines. Owned by the app's lifespan."""

    def __init__(self, *, pool_size: int, timeouts: Timeouts) -> None:
        self._pool_size = pool_size
        self.timeouts = timeouts
        self._pool: Pool | None = None

    async def start(self) -> None:
        self._pool = Pool(self._pool_size, self.timeouts.connect)

    async def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    async def open(
        self,
        method: str,
        url: str,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        api_key: str | None = None,
    ) -> UpstreamResponse:
        """Send a request and wait for the status line; errors mapped to ours."""
        if self._pool is None:
            raise RuntimeError("Upstream used before start()")
        send_headers = dict(headers or {})
        if api_key:
            send_headers["Authorization"] = f"Bearer {api_key}"
        try:
            exchange = await self._pool.request(
                method, url, send_headers, body, self.timeouts.first_byte
            )
        except TimeoutError as exc:
            raise UpstreamTimeout("engine did not answer in time") from exc
        except (ConnectionLost, OSError) as exc:
            raise UpstreamUnreachable(f"engine unreachable: {exc}") from exc
        return UpstreamResponse(exchange, self.timeouts)

    async def open_ok(
        self,
        method: str,
        url: str,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        api_key: str | None = None,
    ) -> UpstreamResponse:
        """Like ``open`` but an engine error status raises ``UpstreamError``."""
        response = await self.open(method, url, body=body, headers=headers, api_key=api_key)
        if response.status >= 400:
            payload = await response.read()
            raise UpstreamError(openai_error_message(payload), status=response.status)
        return response

    async def json(
        self,
        method: str,
        url: str,
        payload: Any = None,
        *,
        headers: Mapping[str, str] | None = None,
        api_key: str | None = None,
    ) -> Any:
        body = None if payload is None else orjson.dumps(payload)
        send = {"content-type": "application/json", **(headers or {})}
        response = await self.open_ok(method, url, body=body, headers=send, api_key=api_key)
        data = await response.read()
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise UpstreamError("engine sent a body that is not JSON") from exc
