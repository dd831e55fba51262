"""Ollama-style model names: ``[host/][namespace/]model[:tag]``.

Why our own parser: Ollama users type ``smollm2``, ``SmolLM2:135M`` or
``registry.ollama.ai/library/smollm2:latest`` and expect them to mean the same
model, so every lookup goes through :func:`normalize`. The rules follow Ollama's
``types/model/name.go``: parts are ASCII letters, digits, ``_``, ``-`` and ``.``
(no ``.`` in a namespace, no ``..`` anywhere), a part starts with a letter, digit
or ``_``; the host may carry a ``:port``; comparison ignores case; a missing tag
means ``latest``; the default host and namespace are dropped when displayed.
Builds (``+Q4_0``) and digests (``@sha256-...``) are not part of our names.
"""

from __future__ import annotations

import functools
import re

DEFAULT_TAG = "latest"
DEFAULT_HOST = "registry.ollama.ai"
DEFAULT_NAMESPACE = "library"
MAX_PART_LEN = 128
MAX_TAG_LEN = 80

_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
_NAMESPACE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")
_HOST = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*(:[0-9]{1,5})?")


def _split(name: str) -> tuple[list[str], str, str | None]:
    """Split into (path parts before the model, model, tag or None), no validation.

    The tag is after the last ``:`` of the last path segment, so the ``:port`` of a
    host (always in an earlier segment) is never taken for a tag."""
    text = name.strip()
    for scheme in ("http://", "https://"):
        if text.lower().startswith(scheme):
            text = text[len(scheme) :]
    *prefix, last = text.split("/")
    model, sep, tag = last.rpartition(":")
    if not sep:
        return prefix, last, None
    return prefix, model, tag


def _shortest(prefix: list[str]) -> list[str]:
    """Drop the default host and namespace, as Ollama's ``DisplayShortest`` does."""
    if len(prefix) == 2 and prefix[0].lower() == DEFAULT_HOST:
        prefix = prefix[1:]
    if len(prefix) == 1 and prefix[0].lower() == DEFAULT_NAMESPACE:
        prefix = []
    return prefix


def display_name(name: str) -> str:
    """The name as we show it (``/api/tags``): case kept, default prefix dropped,
    ``:latest`` added when there is no tag. ``"Library/SmolLM2"`` -> ``"SmolLM2:latest"``."""
    prefix, model, tag = _split(name)
    return "/".join([*_shortest(prefix), f"{model}:{tag or DEFAULT_TAG}"])


@functools.lru_cache(maxsize=4096)
def normalize(name: str) -> str:
    """The identity of a name: :func:`display_name` lower-cased. Two names refer to
    the same model exactly when their normalized forms are equal. Never raises;
    check :func:`is_valid` where a name is created. Cached: every request
    resolves its model through it, mostly under a handful of names."""
    return display_name(name).lower()


def is_valid(name: str) -> bool:
    """Whether ``name`` is an acceptable model name (for ``create``, ``copy``, ``pull``)."""
    prefix, model, tag = _split(name)
    if len(prefix) > 2 or (tag is not None and not tag):
        return False
    if not _ok(_PART, model, MAX_PART_LEN) or (tag and not _ok(_PART, tag, MAX_TAG_LEN)):
        return False
    if len(prefix) == 2 and not _ok(_HOST, prefix[0], MAX_PART_LEN):
        return False
    return not prefix or _ok(_NAMESPACE, prefix[-1], MAX_PART_LEN)


def _ok(pattern: re.Pattern[str], part: str, max_len: int) -> bool:
    return len(part) <= max_len and ".." not in part and pattern.fullmatch(part) is not None


def model_part(name: str) -> str:
    """The bare model part, e.g. ``"smollm2"`` for ``"library/SmolLM2:135m"`` (lower-case)."""
    return _split(name)[1].lower()


def dir_name(name: str) -> str:
    """A file-system-safe, reversible directory name for a model in the store.

    ``/`` becomes ``+`` and ``:`` becomes ``@``; neither can occur in a valid name,
    so distinct names never share a directory. ``"smollm2:135m"`` -> ``"smollm2@135m"``.
    Raises ``ValueError`` for an invalid name, so no name can escape the store."""
    if not is_valid(name):
        raise ValueError(f"invalid model name {name!r}")
    return normalize(name).replace("/", "+").replace(":", "@")
