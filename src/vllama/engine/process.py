"""Process-group plumbing for the supervisor, kept apart from its state machine.

An engine runs in its own session (``start_new_session=True``), so its process
group id is its pid and every helper it forks (vLLM's EngineCore) shares it.
"Gone" means no living member of that group is left: a zombie still answers
``kill(0)``, so membership is confirmed with psutil before we wait on it.

Exit is detected by polling ``returncode`` because ``Process.wait()`` also waits
for the output pipe to close, which a surviving helper keeps open.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import signal
import time
from collections.abc import Callable

import psutil

logger = logging.getLogger("vllama.engine")

EXIT_POLL = 0.05
#: How long to wait for the kernel to finish a SIGKILLed group.
KILL_WAIT = 5.0
_LINE_SPLIT = re.compile(rb"\r\n|\r|\n")
_MAX_LINE = 65536


def group_alive(pgid: int) -> bool:
    """Whether any process of group ``pgid`` is still running (zombies excluded)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                return True
        except (psutil.Error, OSError):
            continue
    return False


def signal_group(pgid: int, sig: signal.Signals) -> None:
    """Send ``sig`` to the whole group; a group that is already gone is fine."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


async def wait_gone(proc: asyncio.subprocess.Process, within: float) -> bool:
    """Wait until the leader has exited and its group is empty; False on timeout."""
    deadline = time.monotonic() + within
    while True:
        if proc.returncode is not None and not group_alive(proc.pid):
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(EXIT_POLL)


async def terminate_group(proc: asyncio.subprocess.Process, grace: float) -> None:
    """SIGTERM the group, then SIGKILL it if anything is left after ``grace``."""
    if not group_alive(proc.pid):
        return
    signal_group(proc.pid, signal.SIGTERM)
    if await wait_gone(proc, grace):
        return
    logger.warning("engine still running %.1fs after SIGTERM; sending SIGKILL", grace)
    signal_group(proc.pid, signal.SIGKILL)
    if not await wait_gone(proc, KILL_WAIT):
        logger.error("engine process group %d survived SIGKILL", proc.pid)


async def sleep_unless_exit(proc: asyncio.subprocess.Process, seconds: float) -> None:
    """Sleep up to ``seconds``, returning early if the process exits."""
    deadline = time.monotonic() + seconds
    while proc.returncode is None and (left := deadline - time.monotonic()) > 0:  # noqa: ASYNC110
        await asyncio.sleep(min(EXIT_POLL, left))


def exit_reason(returncode: int) -> str:
    """A sentence for an exit status (negative: killed by that signal)."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        hint = " (often the kernel's out-of-memory killer)" if returncode == -9 else ""
        return f"engine was killed by {name}{hint}"
    return f"engine exited with code {returncode}"


async def pump_lines(stream: asyncio.StreamReader, sink: Callable[[str], None]) -> None:
    """Feed each non-blank output line to ``sink`` until EOF.

    ``\\r`` ends a line too (progress bars redraw with it), and an endless line is
    cut at 64 KiB rather than growing the buffer without bound.
    """
    pending = b""
    while chunk := await stream.read(65536):
        *lines, pending = _LINE_SPLIT.split(pending + chunk)
        if len(pending) > _MAX_LINE:
            lines, pending = [*lines, pending], b""
        for line in lines:
            if line.strip():
                sink(line.decode("utf-8", "replace").rstrip())
    if pending.strip():
        sink(pending.decode("utf-8", "replace").rstrip())
