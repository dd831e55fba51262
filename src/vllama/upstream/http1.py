"""HTTP/1.1 to engines: keep-alive connections parsed by httptools, pooled per host.

Why not a general client: the relay's upstream hop is one kind of exchange
(a request whose body is already in memory, one answer read in order, the
connection reused), and aiohttp's client spent ~0.1 ms of Python per request
on what that exchange does not need (cookie jars, redirects, proxy and trace
hooks, multidicts, payload registries): a third of the gateway's own CPU at
concurrency 1 (docs/PERFORMANCE.md). Parsing stays with httptools (llhttp, the
parser uvicorn serves us with); this module holds what is left: writing the
request, the pool, flow control and the end-of-body rules.

An ``Exchange`` is one request on one connection. Its owner reads it to the
end (the connection goes back to the pool) or closes it early (the connection
is closed, so that the engine sees the abort and frees the request's KV cache).
"""

from __future__ import annotations

import asyncio
import collections
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import cast
from urllib.parse import urlsplit

import httptools

#: Bytes of body read ahead of the reader before reading from the socket pauses.
_HIGH_WATER = 256 * 1024
#: An idle connection older than this is closed rather than reused: engines
#: (uvicorn) close theirs after 5 s, and a request must not race that close.
_IDLE_REUSE = 3.0


class ConnectionLost(Exception):
    """The engine closed or broke the connection (or sent what is not HTTP)."""


PoolKey = tuple[str, int, bool]


@dataclass(frozen=True)
class Target:
    """Where a URL's request goes: the pool key, the Host header, the request path."""

    host: str
    port: int
    tls: bool
    authority: str
    path: str

    @property
    def key(self) -> PoolKey:
        return (self.host, self.port, self.tls)


@lru_cache(maxsize=4096)
def target_of(url: str) -> Target:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    tls = parts.scheme == "https"
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    port = parts.port or (443 if tls else 80)
    authority = parts.netloc.rpartition("@")[2]  # credentials are not a Host
    return Target(parts.hostname, port, tls, authority, path)


def request_head(
    method: str, target: Target, headers: Mapping[str, str], length: int | None
) -> bytes:
    """The request line and headers; ``length`` None sends no Content-Length
    (a GET without a body)."""
    lines = [f"{method} {target.path} HTTP/1.1\r\nHost: {target.authority}\r\n"]
    for name, value in headers.items():
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
            raise ValueError(f"line break in header {name!r}")
        lines.append(f"{name}: {value}\r\n")
    lines.append("\r\n" if length is None else f"Content-Length: {length}\r\n\r\n")
    return "".join(lines).encode("latin-1")


class Connection(asyncio.Protocol):
    """One connection; at most one exchange on it at a time."""

    def __init__(self, key: PoolKey) -> None:
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.idle_since = 0.0
        self._exchange: Exchange | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        exchange = self._exchange
        if exchange is None:  # nothing asked: a server that talks out of turn
            self.close()
            return
        exchange.feed(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._exchange is not None:
            self._exchange.lost(exc)

    def start(self, exchange: Exchange) -> None:
        self._exchange = exchange

    def finish(self) -> None:
        self._exchange = None
        self.idle_since = time.monotonic()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


class Exchange:
    """One request's answer as it arrives: the head, then body chunks."""

    def __init__(self, pool: Pool, connection: Connection, reused: bool) -> None:
        self._pool = pool
        self._loop = pool.loop
        self.connection = connection
        self.reused = reused
        self._parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.headers: dict[str, str] = {}
        self._reusable = False
        self._to_close = False  # a body that ends with the connection
        self._head: asyncio.Future[None] = self._loop.create_future()
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._paused = False
        self._complete = False
        self._error: Exception | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._done = False
        self.got_bytes = False

    # -- parser callbacks ------------------------------------------------------------------
    def feed(self, data: bytes) -> None:
        self.got_bytes = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(ConnectionLost("engine switched protocols"))
        except httptools.HttpParserError as exc:
            self._fail(ConnectionLost(f"engine sent an invalid HTTP response: {exc}"))

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        old = self.headers.get(key)
        self.headers[key] = text if old is None else f"{old}, {text}"

    def on_headers_complete(self) -> None:
        self.status = self._parser.get_status_code()
        if self.status < 200:  # 1xx: an interim answer; the real head follows
            self.headers = {}
            return
        self._reusable = self._parser.should_keep_alive()
        self._to_close = (
            "content-length" not in self.headers
            and "chunked" not in self.headers.get("transfer-encoding", "").lower()
            and self.status not in (204, 304)
        )
        if not self._head.done():
            self._head.set_result(None)

    def on_body(self, body: bytes) -> None:
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > _HIGH_WATER and not self._paused:
            self._paused = True
            transport = self.connection.transport
            if transport is not None:
                transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self.status >= 200:
            self._complete = True
            self._wake()

    def lost(self, exc: Exception | None) -> None:
        if self._head.done() and self._to_close and not self._complete:
            self._complete = True  # the body was "until the connection closes"
            self._reusable = False
            self._wake()
            return
        if not self._complete:
            self._fail(ConnectionLost(str(exc) if exc else "engine closed the connection"))

    def _fail(self, error: Exception) -> None:
        if self._error is None:
            self._error = error
        if not self._head.done():
            self._head.set_exception(error)
            self._head.exception()  # retrieved here: the owner may have gone
        self._wake()
        self.connection.close()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- reading ---------------------------------------------------------------------------
    async def head(self, limit: float) -> None:
        """Wait for the status line and headers, at most ``limit`` seconds."""
        if self._head.done():
            self._head.result()
            return
        async with asyncio.timeout(limit):
            await self._head

    async def chunk(self, limit: float) -> bytes:
        """The next body bytes; ``b""`` once the body is complete."""
        while not self._chunks:
            if self._error is not None:
                raise self._error
            if self._complete:
                self.release()
                return b""
            self._waiter = self._loop.create_future()
            try:
                async with asyncio.timeout(limit):
                    await self._waiter
            finally:
                self._waiter = None
        chunk = self._chunks.popleft()
        self._buffered -= len(chunk)
        if self._paused and self._buffered <= _HIGH_WATER // 4:
            self._paused = False
            transport = self.connection.transport
            if transport is not None and not self.connection.closed:
                transport.resume_reading()
        return chunk

    async def body(self, limit: float) -> bytes:
        """The rest of the body; each wait for bytes is bounded by ``limit``."""
        parts = []
        while chunk := await self.chunk(limit):
            parts.append(chunk)
        return b"".join(parts)

    def abandon(self) -> None:
        """Give up before the head: close the connection; the pool's caller
        still holds the slot."""
        self._done = True
        self.connection.close()

    def release(self) -> None:
        """Hand the connection back: pooled when the body was read to its end and
        both sides keep it alive, closed otherwise. Idempotent."""
        if self._done:
            return
        self._done = True
        if not (self._complete and self._reusable and self._error is None) or self._chunks:
            self.connection.close()
        self._pool.put_back(self.connection)


class Pool:
    """Keep-alive connections per (host, port, TLS), at most ``limit`` in use at once."""

    def __init__(self, limit: int, connect_timeout: float) -> None:
        self.loop = asyncio.get_running_loop()
        self._limit = asyncio.Semaphore(limit)
        self._connect_timeout = connect_timeout
        self._idle: dict[PoolKey, list[Connection]] = {}
        self._max_idle = limit
        self._tls: ssl.SSLContext | None = None

    async def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None,
        first_byte: float,
    ) -> Exchange:
        """Send a request and wait (``first_byte`` seconds at most) for its head.

        The returned exchange holds one of the pool's slots until it is read to
        the end or released. A pooled connection that closes before answering a
        byte was closed by the engine while idle: the request goes once more, on
        a new connection.
        """
        target = target_of(url)
        payload = body or b""
        length = None if body is None and method in ("GET", "HEAD") else len(payload)
        if method == "HEAD":
            raise ValueError("HEAD is not supported: its answer's length would be misread")
        head = request_head(method, target, headers, length)
        await self._limit.acquire()
        try:
            fresh = False
            while True:
                exchange = await self._send(target, head, payload, fresh=fresh)
                try:
                    await exchange.head(first_byte)
                except ConnectionLost:
                    exchange.abandon()
                    if fresh or not exchange.reused or exchange.got_bytes:
                        raise
                    fresh = True
                    continue
                except BaseException:
                    exchange.abandon()
                    raise
                return exchange
        except BaseException:
            self._limit.release()
            raise

    async def _send(self, target: Target, head: bytes, payload: bytes, *, fresh: bool) -> Exchange:
        connection = None if fresh else self._take(target.key)
        reused = connection is not None
        if connection is None:
            connection = await self._connect(target)
        exchange = Exchange(self, connection, reused)
        connection.start(exchange)
        transport = connection.transport
        assert transport is not None
        transport.writelines((head, payload) if payload else (head,))
        return exchange

    def _take(self, key: PoolKey) -> Connection | None:
        idle = self._idle.get(key)
        now = time.monotonic()
        while idle:
            connection = idle.pop()
            if not connection.closed and now - connection.idle_since < _IDLE_REUSE:
                return connection
            connection.close()
        return None

    async def _connect(self, target: Target) -> Connection:
        tls = self._tls_context() if target.tls else None
        async with asyncio.timeout(self._connect_timeout):
            _, connection = await self.loop.create_connection(
                lambda: Connection(target.key),
                target.host,
                target.port,
                ssl=tls,
                server_hostname=target.host if tls else None,
            )
        return connection

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context()
        return self._tls

    def put_back(self, connection: Connection) -> None:
        self._limit.release()
        connection.finish()
        if connection.closed:
            return
        idle = self._idle.setdefault(connection.key, [])
        if len(idle) < self._max_idle:
            idle.append(connection)
        else:
            connection.close()

    def close(self) -> None:
        for idle in self._idle.values():
            for connection in idle:
                connection.close()
        self._idle.clear()
