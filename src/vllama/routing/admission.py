"""The bounded queue of one model whose backends are all at max concurrency.

A request that finds every backend saturated waits here (FIFO) until a lease
ends; beyond ``max_queue`` waiters, or after ``queue_timeout``, it gets 503
with Retry-After and Ollama's own wording.
"""

from __future__ import annotations

import asyncio
from collections import deque

from vllama.errors import EngineUnavailable

BUSY = "server busy, please try again.  maximum pending requests exceeded"


class ServerBusy(EngineUnavailable):
    def __init__(self) -> None:
        super().__init__(BUSY, retry_after=1)


class Admission:
    def __init__(self, limit: int, timeout: float) -> None:
        self.limit = limit
        self.timeout = timeout
        self.waiters: deque[asyncio.Future[None]] = deque()
        self.rejected = 0  #: a metric

    async def wait(self, *, again: bool = False) -> None:
        """Queue until woken; ``again``: woken before and still unlucky, keep the place."""
        if not again and len(self.waiters) >= self.limit:
            self.rejected += 1
            raise ServerBusy()
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if again:
            self.waiters.appendleft(waiter)
        else:
            self.waiters.append(waiter)
        try:
            async with asyncio.timeout(self.timeout):
                await waiter
        except TimeoutError:
            self.rejected += 1
            raise ServerBusy() from None
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.wake()  # woken, then gone: the turn passes to the next
            raise
        finally:
            if not waiter.done():
                waiter.cancel()
            if waiter in self.waiters:
                self.waiters.remove(waiter)

    def wake(self) -> None:
        """A slot freed: let the longest waiter try again."""
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
