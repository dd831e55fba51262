"""Pulling a model: Ollama's progress stream over a Hugging Face download.

One ``PullJob`` per model name runs at a time; every pull of that name (two
``ollama pull`` in two terminals, a CLI and a web UI) subscribes to it and sees
the same progress, so a model is downloaded once. A job is not tied to any one
client: it finishes even if its callers leave, and the next pull of the name
finds the files in the cache.

The events are Ollama's (spec §4.4), in order::

    {"status": "pulling manifest"}
    {"status": "pulling <file>", "digest": "sha256:...", "total": N[, "completed": n]}  per file
    {"status": "verifying sha256 digest"}
    {"status": "writing manifest"}
    {"status": "success"}

or ``{"error": "..."}`` last. The first two steps (manifest, then the disk-space
check) end with the internal marker ``MANIFEST_READY`` event so that a route can
answer a failure before it with a real status code.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

from vllama.errors import VllamaError
from vllama.models import names
from vllama.models.aliases import PullTarget
from vllama.models.hub import Hub, HubFile, Manifest
from vllama.models.store import LocalModel, ModelStore

Event = dict[str, Any]
T = TypeVar("T")
#: Emitted once the manifest is read and the download fits (never sent to clients).
MANIFEST_READY = "__manifest_ready__"
#: Minimum seconds between two progress events of one file.
PROGRESS_EVERY = 0.1


async def in_daemon_thread(func: Callable[..., T], *args: Any) -> T:
    """``asyncio.to_thread`` for network calls that may take hours: a daemon thread,
    so a gateway told to stop exits at once instead of waiting for the download
    (the default executor is joined at exit; a blocked socket read is not
    interruptible). ``Hub.stopping`` ends it politely at its next chunk."""
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.done():
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def target() -> None:
        try:
            result = func(*args)
        except BaseException as exc:
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits
                loop.call_soon_threadsafe(settle, None, exc)
            return
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(settle, result, None)

    threading.Thread(target=target, name="vllama-pull", daemon=True).start()
    return await future


class PullJob:
    """One download of one model, watched by any number of subscribers."""

    def __init__(self, target: PullTarget) -> None:
        self.target = target
        #: the latest event per status, in first-seen order: what a late subscriber replays
        self._latest: dict[str, Event] = {}
        self._subscribers: set[asyncio.Queue[Event | None]] = set()
        self.done = asyncio.Event()
        self.result: LocalModel | None = None
        self.error: VllamaError | None = None

    def emit(self, event: Event) -> None:
        key = str(event.get("status", "error"))
        self._latest[key] = event
        for queue in self._subscribers:
            queue.put_nowait(event)

    def finish(self) -> None:
        self.done.set()
        for queue in self._subscribers:
            queue.put_nowait(None)

    async def events(self) -> AsyncIterator[Event]:
        """Everything so far (latest per step), then live events until the end."""
        queue: asyncio.Queue[Event | None] = asyncio.Queue()
        for event in self._latest.values():
            queue.put_nowait(event)
        if self.done.is_set():
            queue.put_nowait(None)
        self._subscribers.add(queue)
        try:
            while True:
                item = await queue.get()
                if item is None:
                    return
                yield item
        finally:
            self._subscribers.discard(queue)


class Puller:
    """Runs pull jobs into ``store``, one per model name at a time."""

    def __init__(self, store: ModelStore, hub: Hub) -> None:
        self.store = store
        self.hub = hub
        self._jobs: dict[str, PullJob] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def pull(self, target: PullTarget) -> PullJob:
        """The running job for ``target``'s name, or a new one."""
        key = names.normalize(target.name)
        job = self._jobs.get(key)
        if job is None:
            job = PullJob(target)
            self._jobs[key] = job
            task = asyncio.create_task(self._run(key, job), name=f"vllama-pull-{key}")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return job

    async def close(self) -> None:
        """Cancel running jobs; their download threads stop at their next chunk."""
        self.hub.stopping.set()
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self, key: str, job: PullJob) -> None:
        try:
            job.emit({"status": "pulling manifest"})
            manifest = await in_daemon_thread(self.hub.manifest, job.target.hub)
            await asyncio.to_thread(self.hub.check_space, manifest)
            job.emit({"status": MANIFEST_READY})
            paths: dict[str, Path] = {}
            fresh: list[HubFile] = []
            for file in manifest.files:
                paths[file.path], downloaded = await self._fetch(job, manifest, file)
                if downloaded:
                    fresh.append(file)
            job.emit({"status": "verifying sha256 digest"})
            for file in fresh:
                await asyncio.to_thread(self.hub.verify, file, paths[file.path])
            job.emit({"status": "writing manifest"})
            job.result = await asyncio.to_thread(
                self.store.add_linked,
                paths,
                job.target.name,
                job.target.hub.source,
                manifest.commit,
            )
            job.emit({"status": "removing any unused layers"})
            job.emit({"status": "success"})
        except VllamaError as err:
            job.error = err
            job.emit({"error": err.message})
        except Exception as exc:  # a bug must still end every subscriber's stream
            job.error = VllamaError(f"pull failed: {type(exc).__name__}: {exc}")
            job.emit({"error": job.error.message})
        finally:
            self._jobs.pop(key, None)
            job.finish()

    async def _fetch(self, job: PullJob, manifest: Manifest, file: HubFile) -> tuple[Path, bool]:
        """The file in the cache, downloading it unless it is there; (path, downloaded)."""
        status = f"pulling {file.path}"
        base: Event = {"status": status, "digest": file.digest, "total": file.size}
        cached = await asyncio.to_thread(self.hub.cached, manifest, file)
        if cached is not None:
            job.emit({**base, "completed": file.size})
            return cached, False
        job.emit(base)
        loop = asyncio.get_running_loop()
        last = [0.0]

        def on_bytes(count: int) -> None:  # on the download thread
            now = time.monotonic()
            if now - last[0] >= PROGRESS_EVERY or count >= file.size:
                last[0] = now
                loop.call_soon_threadsafe(job.emit, {**base, "completed": count})

        path = await in_daemon_thread(self.hub.download, manifest, file, on_bytes)
        job.emit({**base, "completed": file.size})
        return path, True
