"""Model management as the routes need it: pull, blobs, create, copy, delete.

One object per gateway (built by ``server/boot.py``), holding the store, the
alias catalogue, the pull jobs and the blob folder. No HTTP here: routes parse
requests and render answers; this module does the work and raises our errors.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import shutil
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from vllama.errors import BadRequest, ModelNotFound, NotSupported, VllamaError
from vllama.models import names
from vllama.models.aliases import Aliases
from vllama.models.bundled import import_gguf
from vllama.models.hub import Hub
from vllama.models.modelfile import check_parameters
from vllama.models.pull import Puller, PullJob
from vllama.models.store import LocalModel, ModelStore

log = logging.getLogger(__name__)
_DIGEST = re.compile(r"sha256[:-]([0-9a-f]{64})")
Progress = Callable[[str], None]


class ModelManager:
    def __init__(
        self,
        store: ModelStore,
        *,
        home: Path,
        engine_python: Path | None,
        hub: Hub | None = None,
    ) -> None:
        self.store = store
        self.aliases = Aliases(home / "aliases.toml")
        self.puller = Puller(store, hub or Hub())
        self.blobs_dir = home / "blobs"
        self.engine_python = engine_python
        #: Held while the engine is being switched to another model (server/switch.py).
        self.switch_lock = asyncio.Lock()

    async def close(self) -> None:
        """At shutdown: stop pulls in flight."""
        await self.puller.close()

    # -- pull ------------------------------------------------------------------
    def pull(self, typed: str) -> PullJob:
        return self.puller.pull(self.aliases.resolve(typed))

    # -- copy and delete -------------------------------------------------------
    def copy(self, source: str, destination: str) -> LocalModel:
        if not names.is_valid(destination):
            raise BadRequest(f'destination "{destination}" is invalid')
        if self.store.get(source) is None:
            raise VllamaError(f'model "{source}" not found', status=404)
        return self.store.copy(source, destination, parent=names.display_name(source))

    def delete(self, name: str, *, served: set[str]) -> None:
        if not names.is_valid(name):
            raise BadRequest(f'name "{name}" is invalid')
        if names.normalize(name) in served:
            raise VllamaError(
                f"model '{name}' is being served by the engine; serve another model first",
                status=409,
            )
        model = self.store.get(name)
        self.store.remove(name)
        if model is not None and model.source.startswith("hf:"):
            self._forget_download(model)

    def _forget_download(self, model: LocalModel) -> None:
        """Free the Hugging Face cache of a pulled model no other name still uses."""
        repo_id = model.source.removeprefix("hf:").rpartition("@")[0]
        for other in self.store.list():
            if other.digest == model.digest and other.source.startswith(f"hf:{repo_id}@"):
                return
        freed = self.puller.hub.forget(repo_id, model.digest)
        log.info("removed %s from the Hugging Face cache (%d bytes)", repo_id, freed)

    # -- blobs -------------------------------------------------------------------
    def blob_path(self, digest: str) -> Path:
        found = _DIGEST.fullmatch(digest)
        if found is None:
            raise BadRequest(f"invalid digest {digest!r}")
        return self.blobs_dir / f"sha256-{found.group(1)}"

    async def save_blob(self, digest: str, chunks: AsyncIterator[bytes]) -> None:
        """Store an uploaded blob, checking its sha256 as it arrives."""
        path = self.blob_path(digest)
        expected = path.name.removeprefix("sha256-")
        self.blobs_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
        digester = hashlib.sha256()
        try:
            with tmp.open("wb") as handle:
                async for chunk in chunks:
                    digester.update(chunk)
                    handle.write(chunk)
            if digester.hexdigest() != expected:
                raise BadRequest(
                    f"digest mismatch, expected {digest!r}, got sha256:{digester.hexdigest()}"
                )
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    # -- create --------------------------------------------------------------------
    def check_create(self, body: dict[str, Any]) -> None:
        """Everything about a create request that can fail before any work."""
        name = body.get("model") or body.get("name")
        if not isinstance(name, str) or not name:
            raise BadRequest("model is required", param="model")
        if not names.is_valid(name):
            raise BadRequest("invalid model name", param="model")
        adapters = body.get("adapters") or {}
        if not isinstance(adapters, dict):
            raise BadRequest("adapters must be an object of file name to digest")
        if adapters:
            source = body.get("from")
            base = self.store.get(source) if isinstance(source, str) else None
            if base is None:
                raise BadRequest("an ADAPTER needs FROM a model that is on disk")
            if base.adapter_of:
                raise BadRequest(f"{base.name} is itself an adapter")
        if body.get("quantize"):
            raise NotSupported("quantize is not supported: vLLM serves the weights as they are")
        check_parameters(body.get("parameters"))
        files = body.get("files") or {}
        if not isinstance(files, dict):
            raise BadRequest("files must be an object of file name to digest")
        for digest in [*files.values(), *adapters.values()]:
            if not self.blob_path(str(digest)).is_file():
                raise BadRequest(f'blob "{digest}" not found')
        source = body.get("from")
        if not files and not source:
            raise BadRequest("neither 'from' nor 'files' was specified")
        if not files and isinstance(source, str) and self.store.get(source) is None:
            raise ModelNotFound(source)

    async def create(self, body: dict[str, Any], progress: Progress) -> LocalModel:
        """Run a checked create request (``check_create`` first)."""
        name = str(body.get("model") or body.get("name"))
        extra: dict[str, Any] = {}
        if isinstance(body.get("system"), str):
            extra["system"] = body["system"]
        params = check_parameters(body.get("parameters"))
        if params:
            extra["parameters"] = params
        files: dict[str, str] = {str(k): str(v) for k, v in (body.get("files") or {}).items()}
        adapters = {str(k): str(v) for k, v in (body.get("adapters") or {}).items()}
        if adapters:
            base = self.store.get(str(body["from"]))
            assert base is not None
            progress(f"using base model {base.name}")
            blobs = {name: self._safe_blob(name, digest) for name, digest in adapters.items()}
            model = await asyncio.to_thread(self.store.add_adapter, blobs, name, base, **extra)
            progress("writing manifest")
            return model
        if not files:
            source = str(body["from"])
            progress(f"using existing model {names.display_name(source)}")
            base = self.store.get(source)
            assert base is not None
            merged = {"system": base.system, "parameters": base.parameters, **extra}
            merged["parameters"] = {**base.parameters, **params}
            model = await asyncio.to_thread(
                self.store.copy, source, name, parent=base.name, **merged
            )
            progress("writing manifest")
            return model
        ggufs = [f for f in files if f.lower().endswith(".gguf")]
        if ggufs:
            return await self._create_from_gguf(name, files[ggufs[0]], extra, progress)
        return await self._create_from_folder(name, files, extra, progress)

    def _safe_blob(self, relative: str, digest: str) -> Path:
        if relative.startswith("/") or ".." in Path(relative).parts:
            raise BadRequest(f"invalid file name {relative!r}")
        return self.blob_path(digest)

    async def _create_from_gguf(
        self, name: str, digest: str, extra: dict[str, Any], progress: Progress
    ) -> LocalModel:
        if self.engine_python is None or not self.engine_python.exists():
            raise VllamaError(
                "importing a GGUF needs the engine environment: run `vllama engine install`",
                status=500,
            )
        model = await import_gguf(
            self.store,
            self.engine_python,
            self.blob_path(digest),
            name,
            progress,
            source=f"gguf:{digest}",
        )
        if extra:
            model = await asyncio.to_thread(self.store.update, name, **extra)
        progress("writing manifest")
        return model

    async def _create_from_folder(
        self, name: str, files: dict[str, str], extra: dict[str, Any], progress: Progress
    ) -> LocalModel:
        """A safetensors model uploaded file by file (``ollama create`` from a folder)."""
        staging = self.store.root / ".incoming" / f"upload-{uuid.uuid4().hex}"
        try:
            for relative, digest in files.items():
                target = (staging / relative).resolve()
                if not target.is_relative_to(staging.resolve()):
                    raise BadRequest(f"invalid file name {relative!r}")
                target.parent.mkdir(parents=True, exist_ok=True)
                os.link(self.blob_path(digest), target)
            progress("computing digest")
            model = await asyncio.to_thread(
                self.store.add_from_dir, staging, name, "upload", move=True
            )
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        if extra:
            model = await asyncio.to_thread(self.store.update, name, **extra)
        progress("writing manifest")
        return model
