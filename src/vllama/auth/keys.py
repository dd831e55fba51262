"""API key secrets and records.

A secret is ``vll-`` followed by 43 URL-safe characters (256 random bits), so a
leaked one is recognisable in logs and by secret scanners. Only its sha256 is
stored: with that much entropy a slow hash adds nothing, and a fast one keeps
verification in the microseconds. Lookups go by hash and the match is then
confirmed with ``hmac.compare_digest``.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

PREFIX = "vll-"
#: Characters of the secret kept in clear to tell keys apart in listings.
SHOWN = len(PREFIX) + 4

_DURATION = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def new_secret() -> str:
    return PREFIX + secrets.token_urlsafe(32)


def new_key_id() -> str:
    return "key_" + secrets.token_hex(6)


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).hexdigest()


def same_hash(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def parse_expires(value: str | None, *, now: float | None = None) -> float | None:
    """``30d``/``12h``/``90m``/``3600s``/``2w`` from now, or an ISO date/time (UTC
    unless it says otherwise); None or ``never`` for no expiry."""
    if value is None or value.strip().lower() in ("", "never"):
        return None
    text = value.strip().lower()
    moment = time.time() if now is None else now
    found = _DURATION.match(text)
    if found:
        return moment + int(found.group(1)) * _UNITS[found.group(2)]
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError as exc:
        raise ValueError(f"expires: {value!r} is neither a duration (30d) nor a date") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


@dataclass(frozen=True)
class Limits:
    """Per-principal limits; None is unlimited."""

    rpm: int | None = None
    tpm: int | None = None
    max_concurrency: int | None = None

    @property
    def any(self) -> bool:
        return (self.rpm, self.tpm, self.max_concurrency) != (None, None, None)


@dataclass(frozen=True)
class KeyRecord:
    """One key as stored, without its secret."""

    id: str
    name: str
    prefix: str
    hash: str
    models: tuple[str, ...] = ()
    limits: Limits = field(default_factory=Limits)
    created_at: float = 0.0
    expires_at: float | None = None
    revoked_at: float | None = None
    updated_at: float = 0.0

    def usable(self, now: float) -> bool:
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)

    def public(self) -> dict[str, Any]:
        """What listings show: everything but the hash."""
        return {
            "id": self.id,
            "name": self.name,
            "prefix": self.prefix,
            "models": list(self.models),
            "rpm": self.limits.rpm,
            "tpm": self.limits.tpm,
            "max_concurrency": self.limits.max_concurrency,
            "created_at": _iso(self.created_at),
            "expires_at": _iso(self.expires_at),
            "revoked_at": _iso(self.revoked_at),
        }


def _iso(moment: float | None) -> str | None:
    if moment is None:
        return None
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def new_record(
    name: str,
    *,
    models: tuple[str, ...] = (),
    limits: Limits | None = None,
    expires_at: float | None = None,
    now: float | None = None,
) -> tuple[KeyRecord, str]:
    """A fresh key record and its secret (shown once, never stored)."""
    secret = new_secret()
    moment = time.time() if now is None else now
    record = KeyRecord(
        id=new_key_id(),
        name=name,
        prefix=secret[:SHOWN],
        hash=hash_secret(secret),
        models=models,
        limits=limits or Limits(),
        created_at=moment,
        expires_at=expires_at,
        updated_at=moment,
    )
    return record, secret
