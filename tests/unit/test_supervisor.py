"""The supervisor against a real child process (the fake engine), not mocks.

Each test runs the fake with a fault flag and short timeouts, then checks the
states seen, the error text a user would read, and that no process is left.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from vllama.engine.spec import EngineSpec, free_port
from vllama.engine.state import TRANSITIONS, EngineState, InvalidTransition, check_transition
from vllama.engine.supervisor import EngineFailed, Supervisor

FAKE = Path(__file__).resolve().parents[1] / "fakes" / "fake_engine.py"
S = EngineState


def fake_spec(tmp_path: Path, *flags: str, **overrides: Any) -> EngineSpec:
    port = free_port()
    argv = [sys.executable, str(FAKE), "--port", str(port), "--api-key", "k", "--model", "m"]
    values: dict[str, Any] = {
        "argv": [*argv, *flags],
        "env": {},
        "host": "127.0.0.1",
        "port": port,
        "api_key": "k",
        "log_path": tmp_path / "engine.log",
        "start_timeout": 5.0,
        "stop_grace": 1.0,
        "restart_backoff": 0.1,
        "restart_backoff_max": 0.4,
        "health_interval": 0.05,
        "health_timeout": 1.0,
        "watch_interval": 0.1,
    }
    values.update(overrides)
    return EngineSpec(**values)


class Recorder:
    def __init__(self) -> None:
        self.states: list[EngineState] = []

    def __call__(self, state: EngineState, reason: str) -> None:
        self.states.append(state)


def living(pgid: int) -> list[int]:
    """Pids of group ``pgid`` that are still running (zombies do not count)."""
    pids = []
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) == pgid and proc.status() != psutil.STATUS_ZOMBIE:
                pids.append(proc.pid)
        except (psutil.Error, OSError):
            continue
    return pids


def running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def child_pids(log: Path) -> list[int]:
    return [int(p) for p in re.findall(r"spawned child pid=(\d+)", log.read_text())]


async def wait_for(predicate: Any, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_starts_ready_and_stops_clean(tmp_path: Path) -> None:
    seen = Recorder()
    sup = Supervisor(fake_spec(tmp_path, "--start-delay", "0.3"), on_state=seen)
    await sup.start()
    assert sup.state is S.STARTING
    assert sup.retry_after() >= 1
    await sup.wait_ready(5)
    assert sup.is_ready
    assert sup.ready_since is not None
    assert sup.base_url.startswith("http://127.0.0.1:")
    assert sup.api_key == "k"
    pid = sup.pid
    assert pid is not None
    await sup.stop()
    await sup.stop()  # idempotent
    assert seen.states == [S.STARTING, S.READY, S.STOPPING, S.STOPPED]
    assert sup.pid is None
    assert living(pid) == []
    assert "fake engine on" in (tmp_path / "engine.log").read_text()


async def test_early_exit_fails_fast_with_the_log_tail(tmp_path: Path) -> None:
    seen = Recorder()
    sup = Supervisor(fake_spec(tmp_path, "--exit-on-start"), on_state=seen)
    started = time.monotonic()
    await sup.start()
    with pytest.raises(EngineFailed) as caught:
        await sup.wait_ready(5)
    assert time.monotonic() - started < 3
    message = str(caught.value)
    assert "exited with code 1 before it was ready" in message
    assert "ran out of memory" in message  # the diagnosis
    assert "OutOfMemoryError: CPU out of memory" in message  # the evidence
    assert caught.value.status == 503
    assert sup.state is S.FAILED
    assert sup.last_error == message
    assert sup.restarts == 0
    assert seen.states == [S.STARTING, S.FAILED]
    await sup.stop()
    assert sup.state is S.STOPPED


async def test_missing_python_fails_with_a_clear_message(tmp_path: Path) -> None:
    spec = fake_spec(tmp_path)
    sup = Supervisor(fake_spec(tmp_path, argv=["/nonexistent/python", *spec.argv[1:]]))
    await sup.start()
    with pytest.raises(EngineFailed, match="cannot run the engine"):
        await sup.wait_ready(5)
    await sup.stop()


async def test_hang_on_start_fails_at_the_deadline(tmp_path: Path) -> None:
    sup = Supervisor(fake_spec(tmp_path, "--hang-on-start", start_timeout=1.0))
    started = time.monotonic()
    await sup.start()
    with pytest.raises(EngineFailed, match=r"not ready after 1s"):
        await sup.wait_ready(5)
    assert 1.0 <= time.monotonic() - started < 3.5
    assert sup.pid is None  # the hung process was killed
    await sup.stop()


async def test_crash_after_ready_restarts_and_kills_the_old_group(tmp_path: Path) -> None:
    seen = Recorder()
    marker = tmp_path / "crashed"
    flags = ("--crash-after", "0.3", "--crash-marker", str(marker), "--spawn-child")
    sup = Supervisor(fake_spec(tmp_path, *flags), on_state=seen)
    await sup.start()
    await sup.wait_ready(5)
    first_pid = sup.pid
    await wait_for(lambda: S.RESTARTING in seen.states)
    await sup.wait_ready(5)
    assert sup.restarts == 1
    assert sup.pid != first_pid
    assert seen.states == [S.STARTING, S.READY, S.RESTARTING, S.STARTING, S.READY]
    assert first_pid is not None
    assert living(first_pid) == []  # the crashed run's orphaned child was killed
    first_child, second_child = child_pids(tmp_path / "engine.log")
    assert not running(first_child)
    assert running(second_child)
    await sup.stop()
    assert not running(second_child)


async def test_stop_kills_a_group_that_ignores_sigterm(tmp_path: Path) -> None:
    spec = fake_spec(tmp_path, "--ignore-sigterm", "--spawn-child", stop_grace=0.5)
    sup = Supervisor(spec)
    await sup.start()
    await sup.wait_ready(5)
    pgid = sup.pid
    assert pgid is not None
    await wait_for(lambda: len(living(pgid)) == 2)
    started = time.monotonic()
    await sup.stop()
    assert time.monotonic() - started >= 0.5  # SIGTERM was ignored for the grace period
    assert living(pgid) == []
    await wait_for(lambda: _group_gone(pgid))
    assert sup.state is S.STOPPED


def _group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


async def test_wait_ready_before_start_and_stop_before_start(tmp_path: Path) -> None:
    sup = Supervisor(fake_spec(tmp_path))
    await sup.stop()
    with pytest.raises(EngineFailed, match="stopped"):
        await sup.wait_ready(1)
    assert sup.retry_after() >= 1


async def test_restart_after_failure_is_allowed(tmp_path: Path) -> None:
    sup = Supervisor(fake_spec(tmp_path, "--exit-on-start"))
    await sup.start()
    with pytest.raises(EngineFailed):
        await sup.wait_ready(5)
    await sup.start()  # FAILED -> STARTING: a user may try again
    with pytest.raises(EngineFailed):
        await sup.wait_ready(5)
    await sup.stop()


@pytest.mark.parametrize(
    ("old", "new"),
    [
        (S.STOPPED, S.READY),
        (S.STOPPED, S.STOPPING),
        (S.READY, S.STARTING),
        (S.STOPPING, S.STARTING),
        (S.FAILED, S.READY),
        (S.RESTARTING, S.READY),
    ],
)
def test_invalid_transitions_are_rejected(old: EngineState, new: EngineState) -> None:
    with pytest.raises(InvalidTransition):
        check_transition(old, new)


def test_every_state_can_reach_stopped() -> None:
    assert set(TRANSITIONS) == set(EngineState)
    for state in EngineState:
        if state is not S.STOPPED:
            assert S.STOPPING in TRANSITIONS[state] or state is S.STOPPING
    check_transition(S.STOPPING, S.STOPPED)


def test_invalid_transition_inside_the_supervisor(tmp_path: Path) -> None:
    sup = Supervisor(fake_spec(tmp_path))
    with pytest.raises(InvalidTransition, match="from stopped to ready"):
        sup._transition(S.READY)
    assert sup.state is S.STOPPED
