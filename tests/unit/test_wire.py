"""The response head is held until the body's first bytes or the end of the loop tick.

The transport under test wraps a real loopback socket's transport; what the
peer reads is what went on the wire, in order.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator

import pytest

from vllama.server.wire import HeadHoldingTransport

HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"


class Recorder(asyncio.Protocol):
    pass


@pytest.fixture
async def pair() -> AsyncIterator[tuple[HeadHoldingTransport, socket.socket]]:
    """A held transport writing into one end of a socket pair; the other end to read."""
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    loop = asyncio.get_running_loop()
    transport, _ = await loop.connect_accepted_socket(Recorder, ours)
    held = HeadHoldingTransport(transport, loop)
    yield held, theirs
    transport.close()
    theirs.close()


async def read_all(sock: socket.socket) -> bytes:
    await asyncio.sleep(0.05)
    try:
        return sock.recv(65536)
    except BlockingIOError:
        return b""


async def test_head_and_body_leave_together(
    pair: tuple[HeadHoldingTransport, socket.socket],
) -> None:
    held, peer = pair
    held.write(HEAD)
    assert held.get_write_buffer_size() == len(HEAD)  # held, not sent
    with pytest.raises(BlockingIOError):
        peer.recv(65536)
    held.write(b"hello")
    assert held.get_write_buffer_size() == 0
    assert await read_all(peer) == HEAD + b"hello"


async def test_a_head_alone_goes_at_the_end_of_the_tick(
    pair: tuple[HeadHoldingTransport, socket.socket],
) -> None:
    held, peer = pair
    held.write(HEAD)
    with pytest.raises(BlockingIOError):
        peer.recv(65536)  # nothing yet: the tick has not ended
    await asyncio.sleep(0)
    assert await read_all(peer) == HEAD


async def test_closing_sends_what_is_held(
    pair: tuple[HeadHoldingTransport, socket.socket],
) -> None:
    held, peer = pair
    held.write(HEAD)
    held.close()
    assert await read_all(peer) == HEAD


async def test_an_abort_drops_what_is_held(
    pair: tuple[HeadHoldingTransport, socket.socket],
) -> None:
    held, peer = pair
    held.write(HEAD)
    held.abort()
    await asyncio.sleep(0.05)
    assert peer.recv(65536) == b""  # the connection ended and the head never went


async def test_bytes_that_are_not_a_head_go_at_once(
    pair: tuple[HeadHoldingTransport, socket.socket],
) -> None:
    held, peer = pair
    held.write(b"data: 1\n\n")
    assert held.get_write_buffer_size() == 0
    assert peer.recv(65536) == b"data: 1\n\n"  # before any loop tick
