"""The engine's log: a file, a bounded tail, and advice for the usual failures."""

from __future__ import annotations

from pathlib import Path

import pytest

from vllama.engine.logs import EngineLogs


def test_tail_is_bounded_and_ordered(tmp_path: Path) -> None:
    logs = EngineLogs(tmp_path / "logs" / "engine.log", maxlen=3)
    for i in range(5):
        logs.append(f"line {i}")
    assert logs.tail(10) == ["line 2", "line 3", "line 4"]
    assert logs.tail(2) == ["line 3", "line 4"]
    assert logs.tail(0) == []
    logs.close()
    assert (tmp_path / "logs" / "engine.log").read_text().splitlines() == [
        f"line {i}" for i in range(5)
    ]


def test_clear_keeps_the_file(tmp_path: Path) -> None:
    logs = EngineLogs(tmp_path / "engine.log")
    logs.append("first run")
    logs.clear()
    logs.mark("restart")
    assert logs.tail() == ["--- vllama: restart ---"]
    logs.close()
    assert "first run" in (tmp_path / "engine.log").read_text()


def test_without_a_path_only_memory() -> None:
    logs = EngineLogs()
    logs.append("x")
    assert logs.tail() == ["x"]
    logs.close()


@pytest.mark.parametrize(
    ("line", "word"),
    [
        ("torch.OutOfMemoryError: CPU out of memory. Tried to allocate 2.00 GiB", "memory"),
        ("ValueError: No available memory for the cache blocks. Try increasing", "memory"),
        ("OSError: [Errno 98] Address already in use", "port"),
        ("ERROR: [Errno 98] error while attempting to bind on address", "port"),
        ("api_server.py: error: unrecognized arguments: --bogus", "command line"),
        ("api_server.py: error: argument --dtype: invalid choice: 'x'", "command line"),
        ("OSError: Invalid repository ID or local directory specified: 'nope'", "model"),
        ("huggingface_hub.errors.RepositoryNotFoundError: 404 Client Error.", "model"),
        ("ModuleNotFoundError: No module named 'vllm'", "vllama engine install"),
        ("(EngineCore pid=7) ImportError: libgomp.so.1: cannot open", "vllama engine install"),
    ],
)
def test_diagnose(line: str, word: str) -> None:
    logs = EngineLogs()
    for filler in ("INFO starting", line, "Traceback follows", "RuntimeError: init failed"):
        logs.append(filler)
    advice = logs.diagnose()
    assert advice is not None
    assert word in advice


def test_diagnose_none_and_newest_cause_wins() -> None:
    logs = EngineLogs()
    logs.append("INFO all good")
    assert logs.diagnose() is None
    logs.append("OSError: [Errno 98] Address already in use")
    logs.append("torch.OutOfMemoryError: out of memory")
    advice = logs.diagnose()
    assert advice is not None
    assert "memory" in advice


def test_a_warning_mentioning_importerror_is_not_a_diagnosis() -> None:
    logs = EngineLogs()
    logs.append("WARNING Failed to import triton (ImportError: no triton); using fallback")
    assert logs.diagnose() is None
