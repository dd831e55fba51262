"""Usage counted in memory on the request path, written in batches off it.

``add`` is a dict update. A background task (owned by the app's lifespan)
swaps the pending counts out every ``flush_interval`` seconds and writes them
as upserts that add to the stored totals; ``stop`` writes what is left, so a
graceful shutdown loses nothing. A failed write keeps the counts for the next
attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime

from vllama.auth.store import Store, StoreError, UsageRow

log = logging.getLogger("vllama.auth")

Bucket = tuple[str, str, str]  # key id, model, day


def utc_day(moment: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if moment is None else moment, UTC).strftime(
        "%Y-%m-%d"
    )


class UsageBuffer:
    def __init__(self, store: Store, flush_interval: float) -> None:
        self.store = store
        self.flush_interval = flush_interval
        self._pending: dict[Bucket, list[int]] = {}
        self._task: asyncio.Task[None] | None = None
        self._flushing = asyncio.Lock()
        self._epoch_day = -1
        self._day = ""

    def add(self, key_id: str, model: str, prompt: int, completion: int) -> None:
        now = time.time()
        if int(now // 86400) != self._epoch_day:  # format the day once a day, not per request
            self._epoch_day = int(now // 86400)
            self._day = utc_day(now)
        bucket = (key_id, model, self._day)
        counts = self._pending.get(bucket)
        if counts is None:
            self._pending[bucket] = [1, prompt, completion]
        else:
            counts[0] += 1
            counts[1] += prompt
            counts[2] += completion

    def pending(self) -> list[UsageRow]:
        return [UsageRow(*bucket, *counts) for bucket, counts in self._pending.items()]

    async def flush(self) -> None:
        async with self._flushing:
            if not self._pending:
                return
            taken, self._pending = self._pending, {}
            rows = [UsageRow(*bucket, *counts) for bucket, counts in taken.items()]
            try:
                await self.store.add_usage(rows)
            except (StoreError, asyncio.CancelledError):
                for row in rows:  # put them back for the next attempt
                    self.add_row(row)
                raise

    def add_row(self, row: UsageRow) -> None:
        bucket = (row.key_id, row.model, row.day)
        counts = self._pending.setdefault(bucket, [0, 0, 0])
        counts[0] += row.requests
        counts[1] += row.prompt_tokens
        counts[2] += row.completion_tokens

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.flush_interval)
            try:
                await self.flush()
            except StoreError as err:
                log.warning("usage not written yet (will retry): %s", err)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="vllama-usage-flush")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        try:
            await self.flush()
        except StoreError as err:
            log.error("usage lost at shutdown: %s", err)
