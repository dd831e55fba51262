"""The local model store: one Hugging Face folder per model under ``models_dir``.

Why a folder per model rather than Ollama's blobs: vLLM serves an HF folder as it
is (``vllm serve DIR --served-model-name NAME``), so the store keeps exactly that,
plus ``vllama.json``, our manifest (name, source, format, times, digest, size).
Everything Ollama's ``/api/tags`` and ``/api/show`` report (details, model_info,
capabilities, template) is derived from the folder's own files, never stored
twice, and cached by the manifest's mtime so listing is a few ``stat`` calls.

Writers of one name hold the file lock at :meth:`ModelStore.lock_path` (see
``bundled.py``); folders appear and disappear by ``rename``, so a reader sees a
model either complete or not at all. Pure file system: no network, no torch.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from vllama.errors import BadRequest, ModelNotFound
from vllama.models import names
from vllama.models.folder_info import describe_folder, read_json

log = logging.getLogger(__name__)

MANIFEST = "vllama.json"
WEIGHT_SUFFIXES = (".safetensors", ".bin")


@dataclass(frozen=True)
class LocalModel:
    """One model of the store, with what Ollama's ``/api/tags`` and ``/api/show`` need.

    ``details``, ``model_info``, ``capabilities`` and ``template`` are derived from
    the folder when the model is loaded; treat them as read-only."""

    name: str  #: display name, e.g. "smollm2:135m"
    path: Path  #: the HF folder vLLM serves
    source: str  #: where it came from: "gguf:<file>", a hub id, a folder
    format: str  #: "safetensors"
    digest: str  #: sha256 hex over the weight files' sha256s, computed at import
    size: int  #: bytes on disk, the whole folder
    created_at: str  #: RFC 3339
    modified_at: str  #: RFC 3339
    details: dict[str, Any]
    model_info: dict[str, Any]
    capabilities: list[str]
    template: str
    system: str = ""  #: Modelfile SYSTEM: the default system prompt
    parameters: dict[str, Any] = field(default_factory=dict)  #: Modelfile PARAMETER defaults
    parent: str = ""  #: the model it was created or copied from
    adapter_of: str = ""  #: for a LoRA adapter, the base model it applies to


def now_rfc3339() -> str:
    return datetime.now(UTC).isoformat()


def weight_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)


def compute_digest(folder: Path) -> str:
    """sha256 over ``"<file> <sha256>\\n"`` of every weight file, sorted: stable across
    copies of the same weights, and blind to config or tokenizer edits. Reads every
    weight byte, so it runs once, at import, and is stored in the manifest."""
    outer = hashlib.sha256()
    for file in weight_files(folder):
        inner = hashlib.sha256()
        with file.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                inner.update(chunk)
        outer.update(f"{file.name} {inner.hexdigest()}\n".encode())
    return outer.hexdigest()


def _link_or_copy(src: str, dst: str) -> None:
    """Hard-link a file into a copy of a model folder; copy it across file systems."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def folder_size(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def describe(folder: Path, manifest: dict[str, Any]) -> LocalModel:
    """Build the :class:`LocalModel` of a store folder from its manifest and HF files."""
    fmt = str(manifest.get("format", "safetensors"))
    info = describe_folder(folder, manifest["name"], fmt)
    return LocalModel(
        name=manifest["name"],
        path=folder,
        source=manifest.get("source", ""),
        format=fmt,
        digest=manifest["digest"],
        size=int(manifest["size"]),
        created_at=manifest["created_at"],
        modified_at=manifest["modified_at"],
        details={**info.details, "parent_model": str(manifest.get("parent", ""))},
        model_info=info.model_info,
        capabilities=info.capabilities,
        template=info.template,
        system=str(manifest.get("system", "")),
        parameters=dict(manifest.get("parameters") or {}),
        parent=str(manifest.get("parent", "")),
        adapter_of=str(manifest.get("adapter_of", "")),
    )


class ModelStore:
    """The models under ``root`` (``settings.models_dir``); names are case-insensitive.

    Entries starting with ``.`` are ours (locks, staging, trash), never models."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._cache: dict[Path, tuple[tuple[int, int], LocalModel]] = {}

    def path_for(self, name: str) -> Path:
        """The folder a model of this name lives in; BadRequest for an invalid name."""
        try:
            return self.root / names.dir_name(name)
        except ValueError as exc:
            raise BadRequest(str(exc), param="model") from exc

    def lock_path(self, name: str) -> Path:
        """The file writers of ``name`` lock (``fcntl.flock``) while they work."""
        return self.root / f".{names.dir_name(name)}.lock"

    def staging_dir(self, name: str) -> Path:
        """Where a model is assembled before it is renamed into place (same file
        system as the store, so the final rename is atomic). Only the lock holder
        of ``name`` may use or clear it."""
        return self.root / ".incoming" / names.dir_name(name)

    def list(self) -> list[LocalModel]:
        if not self.root.is_dir():
            return []
        found = (self._load(d) for d in self.root.iterdir() if not d.name.startswith("."))
        return sorted((m for m in found if m is not None), key=lambda m: names.normalize(m.name))

    def get(self, name: str) -> LocalModel | None:
        try:
            folder = self.root / names.dir_name(name)
        except ValueError:
            return None
        return self._load(folder)

    def add_from_dir(
        self, source_dir: Path, name: str, source: str, *, move: bool = False
    ) -> LocalModel:
        """Register the HF folder ``source_dir`` as ``name``, replacing any model of
        that name. Hashes the weights (slow for big models: run it in a thread).
        ``move=True`` takes the folder itself (it must be on the store's file system,
        e.g. under :meth:`staging_dir`); otherwise it is copied and left alone."""
        target = self.path_for(name)
        if not (source_dir / "config.json").is_file():
            raise BadRequest(f"{source_dir} is not a Hugging Face model folder (no config.json)")
        if move:
            self._register(source_dir, target, name, source)
        else:
            staged = self.root / ".incoming" / f"{target.name}.{uuid.uuid4().hex}"
            staged.parent.mkdir(parents=True, exist_ok=True)
            try:
                shutil.copytree(source_dir, staged)
                self._register(staged, target, name, source)
            finally:
                shutil.rmtree(staged, ignore_errors=True)  # already renamed away on success
        model = self._load(target)
        if model is None:
            raise BadRequest(f"model folder {target} could not be read after import")
        return model

    def add_linked(self, files: dict[str, Path], name: str, source: str, digest: str) -> LocalModel:
        """Register a model made of files that live elsewhere (a Hugging Face cache
        snapshot): the store folder holds symlinks to them, so nothing is copied.
        ``files`` maps a relative path in the folder to the file; ``digest`` is the
        snapshot's own (its commit), since hashing every weight again would double
        the cost of a pull."""
        target = self.path_for(name)
        if "config.json" not in files:
            raise BadRequest(f"{source} has no config.json: not a Hugging Face model")
        staged = self._stage(target, files, lambda file, link: link.symlink_to(file.absolute()))
        try:
            self._register(staged, target, name, source, digest=digest)
        finally:
            shutil.rmtree(staged, ignore_errors=True)
        return self._require(target)

    def copy(self, source: str, destination: str, **extra: Any) -> LocalModel:
        """A second name for a model: hard links to its files (no bytes copied, and
        removing either name leaves the other whole), same digest. ``extra`` fields
        (``system``, ``parameters``, ``parent``) go into the new manifest."""
        model = self.get(source)
        if model is None:
            raise ModelNotFound(source)
        target = self.path_for(destination)
        staged = self.root / ".incoming" / f"{target.name}.{uuid.uuid4().hex}"
        staged.parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copytree(model.path, staged, symlinks=True, copy_function=_link_or_copy)
            manifest = read_json(staged / MANIFEST)
            (staged / MANIFEST).unlink()
            now = now_rfc3339()
            manifest.update(name=names.display_name(destination), created_at=now, modified_at=now)
            manifest.update(extra)
            self._write_manifest(staged, manifest)
            self.root.mkdir(parents=True, exist_ok=True)
            self._replace(staged, target)
        finally:
            shutil.rmtree(staged, ignore_errors=True)
        return self._require(target)

    def update(self, name: str, **fields: Any) -> LocalModel:
        """Change manifest fields of a model (``system``, ``parameters``), atomically."""
        model = self.get(name)
        if model is None:
            raise ModelNotFound(name)
        manifest = read_json(model.path / MANIFEST)
        manifest.update(fields, modified_at=now_rfc3339())
        tmp = model.path / f".{MANIFEST}.{uuid.uuid4().hex}"
        self._write_manifest_to(tmp, manifest)
        os.replace(tmp, model.path / MANIFEST)  # a new inode: readers' caches see it
        return self._require(model.path)

    def add_adapter(
        self, files: dict[str, Path], name: str, base: LocalModel, **extra: Any
    ) -> LocalModel:
        """Register a LoRA adapter (a PEFT folder: ``adapter_config.json`` and its
        weights) for ``base``; the files are hard-linked in, not copied."""
        if "adapter_config.json" not in files:
            raise BadRequest("a LoRA adapter needs its adapter_config.json")
        target = self.path_for(name)
        staged = self._stage(target, files, lambda file, link: _link_or_copy(str(file), str(link)))
        try:
            fields = {"format": "lora", "adapter_of": base.name, "parent": base.name, **extra}
            self._register(staged, target, name, "adapter", extra=fields)
        finally:
            shutil.rmtree(staged, ignore_errors=True)
        return self._require(target)

    def _stage(
        self, target: Path, files: dict[str, Path], link: Callable[[Path, Path], Any]
    ) -> Path:
        """A staging folder beside the store holding ``files`` at their relative
        paths, each put there by ``link(file, path)``; the caller registers it."""
        staged = self.root / ".incoming" / f"{target.name}.{uuid.uuid4().hex}"
        staged.mkdir(parents=True)
        try:
            for relative, file in files.items():
                path = staged / relative
                path.parent.mkdir(parents=True, exist_ok=True)
                link(file, path)
        except BaseException:
            shutil.rmtree(staged, ignore_errors=True)
            raise
        return staged

    def _with_base(self, adapter: LocalModel) -> LocalModel:
        """An adapter reports what its base model is and can do."""
        base = self.get(adapter.adapter_of)
        if base is None or base.adapter_of:
            return adapter
        details = {**base.details, "format": "lora", "parent_model": base.name}
        return replace(
            adapter,
            details=details,
            model_info=base.model_info,
            capabilities=base.capabilities,
            template=base.template,
        )

    def adapters_of(self, base: str) -> builtins.list[LocalModel]:
        key = names.normalize(base)
        return [m for m in self.list() if m.adapter_of and names.normalize(m.adapter_of) == key]

    def _require(self, target: Path) -> LocalModel:
        model = self._load(target)
        if model is None:
            raise BadRequest(f"model folder {target} could not be read after import")
        return model

    def _write_manifest(self, folder: Path, manifest: dict[str, Any]) -> None:
        self._write_manifest_to(folder / MANIFEST, manifest)

    @staticmethod
    def _write_manifest_to(path: Path, manifest: dict[str, Any]) -> None:
        path.write_text(json.dumps(manifest, indent=2) + "\n", "utf-8")

    def _register(
        self,
        folder: Path,
        target: Path,
        name: str,
        source: str,
        *,
        digest: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        """Write the manifest into ``folder`` and rename it to ``target``."""
        now = now_rfc3339()
        manifest = {
            "name": names.display_name(name),
            "source": source,
            "format": "safetensors",
            "created_at": now,
            "modified_at": now,
            "digest": digest or compute_digest(folder),
            "size": folder_size(folder),  # weights and configs; the manifest is not counted
            **(extra or {}),
        }
        self._write_manifest(folder, manifest)
        self.root.mkdir(parents=True, exist_ok=True)
        self._replace(folder, target)

    def remove(self, name: str) -> None:
        """Delete a model; ModelNotFound if there is none by that name."""
        if self.get(name) is None:
            raise ModelNotFound(name)
        folder = self.path_for(name)
        trash = self.root / f".trash-{uuid.uuid4().hex}"
        folder.rename(trash)  # gone for readers at once; the delete may take a while
        shutil.rmtree(trash, ignore_errors=True)
        self._cache.pop(folder, None)

    def _replace(self, new: Path, target: Path) -> None:
        old = None
        if target.exists():
            old = self.root / f".trash-{uuid.uuid4().hex}"
            target.rename(old)
        new.rename(target)
        self._cache.pop(target, None)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def _load(self, folder: Path) -> LocalModel | None:
        """The model in ``folder``, from the cache while its manifest is unchanged."""
        try:
            stat = (folder / MANIFEST).stat()
        except OSError:
            self._cache.pop(folder, None)
            return None
        key = (stat.st_ino, stat.st_mtime_ns)  # a replaced folder has a new inode
        cached = self._cache.get(folder)
        if cached is not None and cached[0] == key:
            return cached[1]
        try:
            model = describe(folder, read_json(folder / MANIFEST))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("skipping model folder %s: %s", folder, exc)
            return None
        if model.adapter_of:
            model = self._with_base(model)
        self._cache[folder] = (key, model)
        return model
