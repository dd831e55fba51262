"""Shared fixtures: one real `vllama serve` with the embedded engine per session.

Starting vLLM on CPU takes about a minute, so the suites that need the real
engine share one server; the test that kills the engine runs last.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ollama
import openai
import pytest

from tests.procs import Proc, alive, engine_python, free_port, vllama_serve, wait_http

MODEL = "smollm2:135m"


@dataclass
class Served:
    url: str
    proc: Proc
    home: Path
    clients: list[Any] = field(default_factory=list)

    def ollama(self) -> ollama.Client:
        client = ollama.Client(host=self.url)
        self.clients.append(client)
        return client

    def ollama_async(self) -> ollama.AsyncClient:
        """The caller closes it (``await client.close()``) inside its own loop."""
        return ollama.AsyncClient(host=self.url)

    def openai(self) -> openai.OpenAI:
        client = openai.OpenAI(base_url=self.url + "/v1", api_key="unused", max_retries=0)
        self.clients.append(client)
        return client

    def close_clients(self) -> None:
        for client in self.clients:
            client.close()
        self.clients.clear()

    @property
    def engine_url(self) -> str:
        """The engine's own address, read from the gateway's log (tests only)."""
        return self.proc.engine_url()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that restart the shared engine go last, so the others need not wait."""
    items.sort(key=lambda item: item.get_closest_marker("engine_restart") is not None)


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    """Processes a test starts; stopped (and their trees killed) afterwards."""
    started: list[Proc] = []
    yield started
    for proc in started:
        proc.stop()
        proc.kill_group()


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    home = tmp_path_factory.mktemp("vllama-home")
    port = free_port()
    proc = vllama_serve(port, home, "--engine-python", str(engine_python()))
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/ready", timeout=900, proc=proc.popen)
    except AssertionError as exc:
        proc.stop()
        proc.kill_group()
        raise AssertionError(f"{exc}\n--- vllama serve output ---\n{proc.output}") from exc
    served = Served(url, proc, home)
    yield served
    served.close_clients()
    tree = proc.tree()
    code = proc.stop()
    left = alive(tree)
    proc.kill_group()
    assert code == 0, proc.output[-4000:]
    assert not left, f"processes left behind: {left}"
