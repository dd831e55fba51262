"""The upstream client against a scripted HTTP server on real loopback sockets.

Each server connection runs ``script(reader, writer, n)`` for its ``n``-th
request, so a test says byte for byte what the engine answers, when it stalls
and when it hangs up, and sees what reached it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from vllama.errors import UpstreamTimeout, UpstreamUnreachable
from vllama.upstream.client import Timeouts, Upstream

Script = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[bool]]


class Engine:
    """A loopback server: records each request and how many connections came."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.requests: list[bytes] = []
        self.connections = 0
        self.closed_by_client = 0
        self.port = 0

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        n = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                self.requests.append(head + await reader.readexactly(length))
                n += 1
                if not await self.script(reader, writer, n):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            self.closed_by_client += 1
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def engine(script: Script) -> AsyncIterator[Engine]:
    fake = Engine(script)
    server = await asyncio.start_server(fake._serve, "127.0.0.1", 0)
    fake.port = server.sockets[0].getsockname()[1]
    async with server:
        yield fake


@contextlib.asynccontextmanager
async def client(
    *, pool_size: int = 8, first_byte: float = 5.0, idle: float = 5.0
) -> AsyncIterator[Upstream]:
    upstream = Upstream(pool_size=pool_size, timeouts=Timeouts(2.0, first_byte, idle))
    await upstream.start()
    try:
        yield upstream
    finally:
        await upstream.close()


def answer(body: bytes, *, status: str = "200 OK", extra: str = "") -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n{extra}"
    return f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


async def reply_ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> bool:
    writer.write(answer(b'{"n": %d}' % n))
    await writer.drain()
    return True


async def test_requests_reuse_one_connection_and_send_what_was_asked() -> None:
    async with engine(reply_ok) as fake, client() as upstream:
        url = f"http://127.0.0.1:{fake.port}/v1/chat/completions?x=1"
        bodies = []
        for _ in range(3):
            response = await upstream.open(
                "POST", url, body=b'{"a": 1}', headers={"x-request-id": "r1"}, api_key="k"
            )
            assert response.status == 200
            assert response.headers["content-type"] == "application/json"
            bodies.append(await response.read())
    assert bodies == [b'{"n": 1}', b'{"n": 2}', b'{"n": 3}']
    assert fake.connections == 1
    first = fake.requests[0]
    assert first.startswith(b"POST /v1/chat/completions?x=1 HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{fake.port}\r\n".encode() in first
    assert b"x-request-id: r1\r\n" in first
    assert b"Authorization: Bearer k\r\n" in first
    assert first.endswith(b'Content-Length: 8\r\n\r\n{"a": 1}')


async def test_a_get_without_a_body_sends_no_content_length() -> None:
    async with engine(reply_ok) as fake, client() as upstream:
        response = await upstream.open("GET", f"http://127.0.0.1:{fake.port}/health")
        await response.read()
    assert b"content-length" not in fake.requests[0].lower()


async def test_chunked_body_arrives_piece_by_piece() -> None:
    second = asyncio.Event()

    async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await writer.drain()
        await second.wait()
        writer.write(b"6\r\nsecond\r\n0\r\n\r\n")
        await writer.drain()
        return True

    async with engine(chunked) as fake, client() as upstream:
        response = await upstream.open("POST", f"http://127.0.0.1:{fake.port}/v1/completions")
        got = []
        async for chunk in response.chunks():
            got.append(chunk)
            second.set()  # the second piece is sent only once the first was read
        response.close()
        again = await upstream.open("POST", f"http://127.0.0.1:{fake.port}/v1/completions")
        assert await again.read() == b"firstsecond"
    assert got == [b"first", b"second"]
    assert fake.connections == 1


async def test_a_body_delimited_by_close_is_read_whole_and_not_reused() -> None:
    async def until_close(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int
    ) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it")
        await writer.drain()
        return False

    async with engine(until_close) as fake, client() as upstream:
        for _ in range(2):
            response = await upstream.open("POST", f"http://127.0.0.1:{fake.port}/x")
            assert await response.read() == b"all of it"
    assert fake.connections == 2


async def test_an_idle_connection_the_engine_closed_is_replaced_once() -> None:
    async def hang_up_on_second(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int
    ) -> bool:
        if n == 2:  # the request raced the engine's close of an idle connection
            return False
        return await reply_ok(reader, writer, n)

    async with engine(hang_up_on_second) as fake, client() as upstream:
        url = f"http://127.0.0.1:{fake.port}/x"
        assert await (await upstream.open("POST", url)).read() == b'{"n": 1}'
        assert await (await upstream.open("POST", url)).read() == b'{"n": 1}'
    assert fake.connections == 2
    assert len(fake.requests) == 3  # the lost one, then again on a new connection


async def test_a_new_connection_closed_without_an_answer_is_an_error() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> bool:
        return False

    async with engine(hang_up) as fake, client() as upstream:
        with pytest.raises(UpstreamUnreachable, match="engine unreachable"):
            await upstream.open("POST", f"http://127.0.0.1:{fake.port}/x")
    assert fake.connections == 1


async def test_a_refused_connection_is_unreachable() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    async with client() as upstream:
        with pytest.raises(UpstreamUnreachable):
            await upstream.open("GET", f"http://127.0.0.1:{port}/health")


async def test_no_head_in_time_is_a_timeout_and_the_connection_is_dropped() -> None:
    hung_up = asyncio.Event()

    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> bool:
        if await reader.read(1) == b"":  # the client hung up
            hung_up.set()
        return False

    async with engine(stall) as fake, client(first_byte=0.2) as upstream:
        with pytest.raises(UpstreamTimeout):
            await upstream.open("POST", f"http://127.0.0.1:{fake.port}/x")
        await asyncio.wait_for(hung_up.wait(), 2)


async def test_a_stall_mid_body_is_a_timeout() -> None:
    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n")
        await writer.drain()
        await reader.read(1)
        return False

    async with engine(stall) as fake, client(idle=0.2) as upstream:
        response = await upstream.open("POST", f"http://127.0.0.1:{fake.port}/x")
        got: list[bytes] = []

        async def drain() -> None:
            async for chunk in response.chunks():
                got.append(chunk)

        with pytest.raises(UpstreamTimeout, match=r"stalled for more than 0\.2 s"):
            await drain()
        response.close()
    assert got == [b"hi"]


async def test_closing_before_the_end_hangs_up_so_the_engine_sees_the_abort() -> None:
    seen = asyncio.Event()

    async def long(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\none\r\n")
        await writer.drain()
        if await reader.read(1) == b"":
            seen.set()
        return False

    async with engine(long) as fake, client() as upstream:
        url = f"http://127.0.0.1:{fake.port}/x"
        response = await upstream.open("POST", url)
        async for _ in response.chunks():
            break
        response.close()
        await asyncio.wait_for(seen.wait(), 2)
        again = await upstream.open("POST", url)
        assert again.status == 200
        again.close()
    assert fake.connections == 2  # the cut connection was not reused


async def test_what_is_not_http_is_unreachable() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> bool:
        writer.write(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
        await writer.drain()
        await reader.read(1)
        return False

    async with engine(garbage) as fake, client() as upstream:
        with pytest.raises(UpstreamUnreachable, match="invalid HTTP"):
            await upstream.open("POST", f"http://127.0.0.1:{fake.port}/x")


async def test_a_line_break_in_a_header_is_refused_before_sending() -> None:
    async with engine(reply_ok) as fake, client() as upstream:
        with pytest.raises(ValueError, match="line break"):
            await upstream.open(
                "POST", f"http://127.0.0.1:{fake.port}/x", headers={"x-request-id": "a\r\nb: c"}
            )
    assert fake.requests == []


async def test_the_pool_limit_queues_requests_until_a_connection_is_free() -> None:
    async with engine(reply_ok) as fake, client(pool_size=1) as upstream:
        url = f"http://127.0.0.1:{fake.port}/x"
        first = await upstream.open("POST", url)
        waiting = asyncio.create_task(upstream.open("POST", url))
        await asyncio.sleep(0.1)
        assert not waiting.done()
        assert await first.read() == b'{"n": 1}'
        second = await asyncio.wait_for(waiting, 2)
        assert await second.read() == b'{"n": 2}'
    assert fake.connections == 1


async def test_a_large_body_is_read_whole_under_flow_control() -> None:
    big = bytes(range(256)) * 12_000  # 3 MB, far past the read-ahead limit

    async def large(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> bool:
        writer.write(answer(big))
        await writer.drain()
        return True

    async with engine(large) as fake, client() as upstream:
        response = await upstream.open("POST", f"http://127.0.0.1:{fake.port}/x")
        await asyncio.sleep(0.2)  # let the engine run ahead of the reader
        assert await response.read() == big
        assert await (await upstream.open("POST", f"http://127.0.0.1:{fake.port}/x")).read() == big
    assert fake.connections == 1


async def test_an_answer_dropped_unread_gives_its_slot_back() -> None:
    async with engine(reply_ok) as fake, client(pool_size=1) as upstream:
        url = f"http://user:secret@127.0.0.1:{fake.port}/x"
        response = await upstream.open("POST", url)
        del response  # never read nor closed
        again = await asyncio.wait_for(upstream.open("POST", url), 2)
        assert again.status == 200
        again.close()
    assert f"Host: 127.0.0.1:{fake.port}\r\n".encode() in fake.requests[0]
