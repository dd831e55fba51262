"""The Hugging Face Hub, through ``huggingface_hub`` and nothing else.

Why the library: its cache (shared with transformers and vLLM, so a model pulled
once is never downloaded twice), its resume of a download cut mid-file (it asks
again with ``Range``), ``HF_TOKEN`` and ``HF_ENDPOINT``. Weights keep their
partial bytes across a gateway restart too (``partial.py``). This module only chooses
the files vLLM needs, reports bytes as they arrive, and maps the library's
errors into ours where they enter. Every call blocks: run them in a thread.
"""

from __future__ import annotations

import fnmatch
import hashlib
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx2
from huggingface_hub import (
    HfApi,
    constants,
    get_token,
    hf_hub_download,
    scan_cache_dir,
    try_to_load_from_cache,
)
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from vllama.errors import VllamaError
from vllama.models.aliases import HubRef
from vllama.models.partial import CorruptDownload, blob_path, fetch_blob

#: Top-level files vLLM reads: config, tokenizer, chat template, weights.
WANTED = (
    "*.json",
    "*.safetensors",
    "tokenizer.model",
    "*.tiktoken",
    "*.jinja",
    "merges.txt",
    "vocab.txt",
)
#: Pickled weights, only when a repo has no safetensors.
FALLBACK_WEIGHTS = ("pytorch_model*.bin",)
#: Left free on the disk after a pull.
DISK_MARGIN = 256 * 1024 * 1024

OnBytes = Callable[[int], None]


class PullError(VllamaError):
    """A pull failed; ``status`` says why (404 no repo, 401/403 gated, 502 no Hub,
    507 no disk)."""

    status = 502


@dataclass(frozen=True)
class HubFile:
    path: str
    size: int
    digest: str  #: "sha256:<hex>" for LFS files, "sha1:<git blob id>" for the others
    sha256: str | None  #: to verify after download (LFS files only)


@dataclass(frozen=True)
class Manifest:
    ref: HubRef
    commit: str
    files: list[HubFile]

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)


def select(paths: list[str]) -> list[str]:
    """The files of a repo that vLLM needs (top level only: no ``original/``, no ONNX)."""
    top = [p for p in paths if "/" not in p]
    chosen = [p for p in top if any(fnmatch.fnmatch(p, pat) for pat in WANTED)]
    if not any(p.endswith(".safetensors") for p in chosen):
        chosen += [p for p in top if any(fnmatch.fnmatch(p, pat) for pat in FALLBACK_WEIGHTS)]
    return sorted(chosen)


def _describe(err: Exception, ref: HubRef) -> PullError:
    """Map a ``huggingface_hub``/transport error to ours, with the user's next step."""
    repo = ref.repo_id
    if isinstance(err, GatedRepoError):
        if get_token() is None:
            return PullError(
                f"{repo} is a gated repo: accept its terms on the Hub and set HF_TOKEN",
                status=401,
            )
        return PullError(f"{repo} is a gated repo and HF_TOKEN has no access to it", status=403)
    if isinstance(err, RepositoryNotFoundError):
        return PullError(
            f"pull model manifest: repository {repo!r} not found on the Hugging Face Hub"
            + (" (a private repo needs HF_TOKEN)" if get_token() is None else ""),
            status=404,
        )
    if isinstance(err, RevisionNotFoundError):
        return PullError(f"revision {ref.revision!r} of {repo} not found", status=404)
    if isinstance(err, HfHubHTTPError):
        return PullError(f"Hugging Face Hub error: {str(err).splitlines()[0]}", status=502)
    if isinstance(err, OfflineModeIsEnabled):
        return PullError("cannot pull: HF_HUB_OFFLINE is set", status=502)
    if isinstance(err, httpx2.TransportError | LocalEntryNotFoundError):
        return PullError(
            f"cannot reach the Hugging Face Hub at {constants.ENDPOINT}: {type(err).__name__}",
            status=502,
        )
    return PullError(f"pull failed: {type(err).__name__}: {err}", status=500)


class Hub:
    """Blocking calls to the Hub; ``cache_dir`` None means huggingface_hub's default."""

    def __init__(self, cache_dir: Path | None = None) -> None:
        self.cache_dir = cache_dir
        #: Set at shutdown: downloads in flight stop at their next chunk.
        self.stopping = threading.Event()
        #: Blobs hashed as they were completed (partial.py): not hashed twice.
        self._verified: set[Path] = set()

    @property
    def cache_root(self) -> Path:
        return self.cache_dir or Path(constants.HF_HUB_CACHE)

    def manifest(self, ref: HubRef) -> Manifest:
        """The revision's commit and the files to pull, after checking we may read them."""
        try:
            info = HfApi().model_info(ref.repo_id, revision=ref.revision, files_metadata=True)
            siblings = {s.rfilename: s for s in info.siblings or []}
            files = []
            for path in select(list(siblings)):
                sib = siblings[path]
                lfs = sib.lfs
                digest = f"sha256:{lfs.sha256}" if lfs else f"sha1:{sib.blob_id or ''}"
                files.append(HubFile(path, int(sib.size or 0), digest, lfs.sha256 if lfs else None))
            if info.sha is None:
                raise PullError(f"the Hub sent no commit for {ref.repo_id}")
            if "config.json" not in siblings:
                raise PullError(
                    f"{ref.repo_id} has no config.json: not a model vLLM can serve", status=400
                )
            # The info API is public even for gated repos: probe one file for access.
            HfApi().get_hf_file_metadata(
                url=f"{constants.ENDPOINT}/{ref.repo_id}/resolve/{info.sha}/config.json"
            )
        except PullError:
            raise
        except Exception as exc:
            raise _describe(exc, ref) from exc
        return Manifest(ref, info.sha, files)

    def cached(self, manifest: Manifest, file: HubFile) -> Path | None:
        found = try_to_load_from_cache(
            manifest.ref.repo_id,
            file.path,
            cache_dir=self.cache_dir,
            revision=manifest.commit,
        )
        return Path(found) if isinstance(found, str) else None

    def check_space(self, manifest: Manifest) -> None:
        """Refuse before downloading when the files missing from the cache do not fit."""
        needed = sum(f.size for f in manifest.files if self.cached(manifest, f) is None)
        root = self.cache_root
        while not root.exists() and root != root.parent:
            root = root.parent
        free = shutil.disk_usage(root).free
        if needed + DISK_MARGIN > free:
            raise PullError(
                f"not enough disk space in {self.cache_root}: {manifest.ref.repo_id} needs "
                f"{_gb(needed)} more, {_gb(free)} free",
                status=507,
            )

    def download(self, manifest: Manifest, file: HubFile, on_bytes: OnBytes) -> Path:
        """One file into the cache (resumed by the library if the connection drops)."""

        def reporting(count: int) -> None:
            if self.stopping.is_set():
                raise PullError("pull cancelled: the server is stopping", status=503)
            on_bytes(count)

        bar = cast(Any, bar_class(reporting))
        try:
            if file.sha256 is not None and not constants.HF_HUB_OFFLINE:  # see partial.py
                repo_id, sha256 = manifest.ref.repo_id, file.sha256
                if fetch_blob(
                    self.cache_root, repo_id, manifest.commit, file.path,
                    sha256=sha256, size=file.size, tqdm_class=bar,
                ):  # fmt: skip
                    self._verified.add(blob_path(self.cache_root, repo_id, sha256))
            path = hf_hub_download(
                manifest.ref.repo_id,
                file.path,
                revision=manifest.commit,
                cache_dir=self.cache_dir,
                tqdm_class=bar,
            )
        except CorruptDownload as exc:
            raise PullError(str(exc)) from exc
        except PullError:
            raise
        except Exception as exc:
            raise _describe(exc, manifest.ref) from exc
        return Path(path)

    def forget(self, repo_id: str, commit: str) -> int:
        """Delete one revision of a repo from the cache (its blobs no other revision
        uses); the bytes freed."""
        if not self.cache_root.is_dir():
            return 0
        info = scan_cache_dir(self.cache_root)
        for repo in info.repos:
            if repo.repo_type != "model" or repo.repo_id.lower() != repo_id.lower():
                continue
            if any(rev.commit_hash == commit for rev in repo.revisions):
                strategy = info.delete_revisions(commit)
                strategy.execute()
                return strategy.expected_freed_size
        return 0

    def verify(self, file: HubFile, path: Path) -> None:
        if file.sha256 is None or path.resolve() in self._verified:
            return
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
        if digest.hexdigest() != file.sha256:
            path.unlink(missing_ok=True)
            raise PullError(f"digest mismatch for {file.path}: the download is corrupt")


def _gb(count: int) -> str:
    return f"{count / 1e9:.2f} GB"


class _Bar:
    """The part of tqdm ``huggingface_hub`` drives, for both of its download paths
    (plain HTTP and Xet). Reports the bytes written so far to ``report``.

    Used as a class (``tqdm_class``): ``bar_class`` binds ``report`` in a subclass.
    Defining ``update_transfer`` makes the Xet reporter keep one bar for written and
    transferred bytes instead of two, so only written bytes are counted."""

    report: OnBytes

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.n = int(kwargs.get("initial") or 0)
        self.total = kwargs.get("total")
        type(self).report(self.n)

    def update(self, count: int | float | None = 1) -> None:
        self.n += int(count or 0)
        type(self).report(self.n)

    def update_transfer(self, count: int | float | None = 1) -> None:
        return None  # network bytes: written bytes are what Ollama's progress counts

    def set_postfix_str(self, *args: Any, **kwargs: Any) -> None:
        return None

    def set_transfer_postfix_str(self, *args: Any, **kwargs: Any) -> None:
        return None

    def refresh(self, *args: Any, **kwargs: Any) -> None:
        return None

    def __enter__(self) -> _Bar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def close(self) -> None:
        return None


def bar_class(report: OnBytes) -> type[_Bar]:
    """A ``tqdm_class`` for one download, reporting to ``report``."""
    return type("FileBar", (_Bar,), {"report": staticmethod(report)})
