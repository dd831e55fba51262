"""HTTP to an engine: one pooled aiohttp session, errors mapped to ours.

aiohttp rather than httpx: httpx's pool does work quadratic in open requests
and collapsed to ~570 req/s in front of a fast upstream on this kind of
machine, where aiohttp held ~4,600 (docs/PERFORMANCE.md). Transport failures
become ``UpstreamUnreachable``/``UpstreamTimeout`` here, where they enter, so
routes never see an aiohttp exception; an engine's own error answer becomes an
``UpstreamError`` carrying its status and message.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from vllama.errors import UpstreamError, UpstreamTimeout, UpstreamUnreachable
from vllama.translate.responses import openai_error_message

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

    def __init__(self, response: aiohttp.ClientResponse, timeouts: Timeouts) -> None:
        self._response = response
        self._timeouts = timeouts
        self.status = response.status
        self.headers = response.headers

    async def read(self) -> bytes:
        """The whole body; a stall is bounded by the session's socket-read limit."""
        try:
            return await self._response.read()
        except TimeoutError as exc:
            raise UpstreamTimeout("engine did not answer in time") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamUnreachable(f"engine connection failed: {exc}") from exc
        finally:
            self.close()

    async def chunks(self) -> AsyncIterator[bytes]:
        """Body bytes as they arrive.

        The first wait is bounded by the session's socket-read limit (the
        first-byte timeout); each later gap by the idle timeout.
        """
        idle = self._timeouts.idle
        limit = self._timeouts.first_byte
        content = self._response.content
        try:
            chunk = await content.readany()
            while chunk:
                yield chunk
                limit = idle
                async with asyncio.timeout(idle):
                    chunk = await content.readany()
        except TimeoutError as exc:
            raise UpstreamTimeout(f"engine stalled for more than {limit:g} s") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamUnreachable(f"engine connection lost: {exc}") from exc

    def close(self) -> None:
        if not self._response.closed:
            self._response.close()


class Upstream:
    """The pooled client to one engine. Owned by the app's lifespan."""

    def __init__(self, *, pool_size: int, timeouts: Timeouts) -> None:
        self._pool_size = pool_size
        self.timeouts = timeouts
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self._pool_size, limit_per_host=self._pool_size, ttl_dns_cache=300
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(
                total=None,
                sock_connect=self.timeouts.connect,
                sock_read=self.timeouts.first_byte,
            ),
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("User-Agent", "Accept-Encoding"),
            json_serialize=lambda obj: orjson.dumps(obj).decode(),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise RuntimeError("Upstream used before start()")
        return self._session

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
        send_headers = dict(headers or {})
        if api_key:
            send_headers["Authorization"] = f"Bearer {api_key}"
        try:
            # The session's sock_read limit bounds the wait for the status line.
            response = await self.session.request(
                method, url, data=body, headers=send_headers, allow_redirects=False
            )
        except TimeoutError as exc:
            raise UpstreamTimeout("engine did not answer in time") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamUnreachable(f"engine unreachable: {exc}") from exc
        return UpstreamResponse(response, self.timeouts)

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
