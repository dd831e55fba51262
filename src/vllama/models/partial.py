"""Weights downloads that survive a gateway restart.

``huggingface_hub`` 2.4 resumes a download cut mid-file only within one call: it
writes each attempt to a temporary file with a fresh random name and deletes it
when the call fails, so a pull interrupted by stopping the gateway (Ctrl-C,
SIGTERM, a deploy) starts the file again from byte 0. For a model of tens of GB
that is an hour lost. So for LFS files (the weights: large, content-addressed by
their sha256, which is also the name of their blob in the cache) we download the
bytes ourselves, with the library's own ``http_get`` (its retries, ``Range``
resume, auth headers, ``HF_ENDPOINT``), into a partial file whose name is fixed by
the blob (``blobs/<sha256>.vllama-partial``), kept when the pull stops. Once the
file is whole and its sha256 checks, it is renamed to the blob; the ordinary
``hf_hub_download`` then finds the blob and only links it into the snapshot, so
the cache layout stays the library's. Other files are small and left to it.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from pathlib import Path
from typing import Any

from huggingface_hub import hf_hub_url
from huggingface_hub.constants import REPO_TYPE_MODEL
from huggingface_hub.file_download import http_get, repo_folder_name
from huggingface_hub.utils._headers import build_hf_headers

SUFFIX = ".vllama-partial"


class CorruptDownload(Exception):
    """The bytes do not hash to the file's sha256 (the partial file is removed)."""


def blob_path(cache_root: Path, repo_id: str, sha256: str) -> Path:
    """Where ``huggingface_hub`` keeps the blob of an LFS file of ``repo_id``."""
    folder = repo_folder_name(repo_id=repo_id, repo_type=REPO_TYPE_MODEL)
    return cache_root / folder / "blobs" / sha256


def fetch_blob(
    cache_root: Path,
    repo_id: str,
    commit: str,
    filename: str,
    *,
    sha256: str,
    size: int,
    tqdm_class: Any,
) -> bool:
    """Make the blob of one LFS file whole, resuming a partial file left by an
    earlier pull; True when bytes were downloaded (and verified) now."""
    blob = blob_path(cache_root, repo_id, sha256)
    if blob.exists():
        return False
    blob.parent.mkdir(parents=True, exist_ok=True)
    partial = blob.with_name(blob.name + SUFFIX)
    locks = cache_root / ".locks" / blob.parent.parent.name  # beside the library's own locks
    locks.mkdir(parents=True, exist_ok=True)
    with open(locks / f"{sha256}{SUFFIX}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two pulls of one repo under two names
        if blob.exists():
            return False
        with partial.open("ab") as handle:
            have = handle.tell()
            if have > size:  # not ours to resume: start again
                handle.truncate(0)
                have = 0
            url = hf_hub_url(repo_id, filename, revision=commit)
            http_get(
                url,
                handle,
                resume_size=have,
                headers=build_hf_headers(),
                expected_size=size,
                displayed_filename=filename,
                tqdm_class=tqdm_class,
            )
        if _sha256(partial) != sha256:
            partial.unlink(missing_ok=True)
            raise CorruptDownload(f"digest mismatch for {filename}: the download is corrupt")
        os.replace(partial, blob)
    return True


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
