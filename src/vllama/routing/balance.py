"""The order in which backends are tried for one request.

Primaries first: the affinity pick (if the model asks for one and that backend
has room), then the least outstanding requests per unit of weight, ties to the
higher weight, then to the least recently picked (so idle equals alternate).
Fallbacks after, in the same order. Affinity is rendezvous hashing: a key
always maps to the same backend while it is up, and only that backend's keys
move when the set changes; every gateway replica computes the same answer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import orjson

from vllama.routing.backend import Backend
from vllama.routing.config import ModelRouting

#: Characters of a plain prompt hashed for prefix affinity.
PREFIX_CHARS = 1024


def _load(backend: Backend) -> tuple[float, float, int]:
    return (backend.outstanding / backend.weight, -backend.weight, backend.last_pick)


def _score(key: bytes, backend: Backend) -> bytes:
    return hashlib.blake2b(key + b"\0" + backend.name.encode(), digest_size=8).digest()


def order(backends: Sequence[Backend], key: bytes | None) -> list[Backend]:
    """``backends`` (all able to take a request now) in the order to try them."""
    primaries = sorted((b for b in backends if b.role == "primary"), key=_load)
    fallbacks = sorted((b for b in backends if b.role == "fallback"), key=_load)
    if key is not None and len(primaries) > 1:
        sticky = max(primaries, key=lambda b: _score(key, b))
        primaries.remove(sticky)
        primaries.insert(0, sticky)
    return primaries + fallbacks


def affinity_key(
    policy: ModelRouting, session: str | None, body: dict[str, Any] | None
) -> bytes | None:
    """What pins a request to a backend under ``policy``, or None (balance freely)."""
    if policy.affinity == "session":
        return session.encode() if session else None
    if policy.affinity != "prefix" or body is None:
        return None
    messages = body.get("messages")
    if isinstance(messages, list) and messages:
        return orjson.dumps(messages[: policy.prefix_messages])
    for field in ("prompt", "input"):
        text = body.get(field)
        if isinstance(text, str) and text:
            return text[:PREFIX_CHARS].encode()
    return None
