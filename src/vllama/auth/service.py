"""Keys, limits and usage wired together; the app's lifespan starts and stops it.

The key table is mirrored in memory (``_ring``: hash -> key and principal) and
reloaded by a background task every ``auth_refresh_interval`` seconds when the
table's fingerprint changed, so a key revoked by the CLI or by another replica
stops working within that interval, while ``verify`` (the hot path) is a
sha256, a dict lookup and a constant-time compare. Changes made through this
process's admin API apply to the mirror at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from dataclasses import dataclass, replace
from typing import Any

from vllama.auth.keys import (
    SHOWN,
    KeyRecord,
    Limits,
    hash_secret,
    new_record,
    new_secret,
    same_hash,
)
from vllama.auth.limits import Limiters, check_ceilings
from vllama.auth.metering import Meter
from vllama.auth.principal import Principal, allow_model, model_key, principal_of
from vllama.auth.store import Store, StoreError, UsageRow, open_store
from vllama.auth.usage import UsageBuffer
from vllama.errors import Unauthorized
from vllama.settings import Settings

log = logging.getLogger("vllama.auth")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_MAX_IDENTITY = 128


def is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def auth_required(settings: Settings) -> bool:
    """``on``; ``off``; ``auto``: required unless the gateway binds loopback only."""
    if settings.auth == "auto":
        return not is_loopback(settings.host)
    return settings.auth == "on"


@dataclass(frozen=True, slots=True)
class _Entry:
    record: KeyRecord
    principal: Principal


class AuthService:
    def __init__(self, settings: Settings, store: Store | None = None) -> None:
        self.settings = settings
        url = settings.database_url.get_secret_value() if settings.database_url else None
        self.store = store if store is not None else open_store(url, settings.home)
        self.required = auth_required(settings)
        self.usage = UsageBuffer(self.store, settings.usage_flush_interval)
        self.limiters = Limiters()
        self._ring: dict[str, _Entry] = {}
        self._fingerprint: tuple[int, float] | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._fronts: dict[str, Principal] = {}
        admin = settings.admin_key
        self._admin_hash = hash_secret(admin.get_secret_value()) if admin else None
        front = settings.trusted_front_secret
        self._front_hash = hash_secret(front.get_secret_value()) if front else None
        self._front_nets: tuple[IPNetwork, ...] = tuple(
            ipaddress.ip_network(a, strict=False) for a in settings.trusted_front_addresses
        )
        self._front_limits = Limits(
            rpm=settings.front_rpm,
            tpm=settings.front_tpm,
            max_concurrency=settings.front_max_concurrency,
        )
        self.anonymous = Principal("anonymous", "anonymous", sink=self.usage.add)
        self.admin = Principal("admin", "admin", sink=self.usage.add)

    # -- lifecycle ------------------------------------------------------------
    async def start(self) -> None:
        await self.store.open()
        await self.reload()
        self.usage.start()
        self._refresher = asyncio.create_task(self._refresh(), name="vllama-auth-refresh")
        log.info(
            "auth %s; %d keys in %s",
            "required" if self.required else "optional",
            len(self._ring),
            self.store.name,
        )

    async def stop(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
            self._refresher = None
        await self.usage.stop()
        await self.store.close()

    async def reload(self) -> None:
        """Mirror the key table again if it changed since the last look."""
        fingerprint = await self.store.fingerprint()
        if fingerprint != self._fingerprint:
            self._mirror(await self.store.keys())
            self._fingerprint = fingerprint

    def _mirror(self, records: list[KeyRecord]) -> None:
        self._ring = {r.hash: _Entry(r, self._principal(r)) for r in records}

    def _principal(self, record: KeyRecord) -> Principal:
        return Principal(
            id=record.id,
            name=record.name,
            models=frozenset(model_key(m) for m in record.models),
            limiter=self.limiters.get(record.id, record.limits) if record.limits.any else None,
            sink=self.usage.add,
        )

    def _put(self, record: KeyRecord) -> None:
        ring = {h: e for h, e in self._ring.items() if e.record.id != record.id}
        ring[record.hash] = _Entry(record, self._principal(record))
        self._ring = ring

    async def _refresh(self) -> None:
        while True:
            await asyncio.sleep(self.settings.auth_refresh_interval)
            try:
                await self.reload()
            except StoreError as err:
                log.warning("key table not reloaded (keeping the last copy): %s", err)

    # -- the hot path ---------------------------------------------------------
    def verify(self, secret: str, now: float | None = None) -> Principal:
        """The principal of a key (the admin key included), or Unauthorized. No I/O."""
        digest = hash_secret(secret)
        entry = self._ring.get(digest)
        if entry is None or not same_hash(entry.record.hash, digest):
            if self._admin_hash is not None and same_hash(self._admin_hash, digest):
                return self.admin
            raise Unauthorized("invalid API key", code="invalid_api_key")
        record = entry.record
        if record.revoked_at is not None:
            raise Unauthorized("API key revoked", code="invalid_api_key")
        if record.expires_at is not None and (now or time.time()) >= record.expires_at:
            raise Unauthorized("API key expired", code="invalid_api_key")
        return entry.principal

    def is_admin(self, secret: str) -> bool:
        return self._admin_hash is not None and same_hash(self._admin_hash, hash_secret(secret))

    @property
    def admin_enabled(self) -> bool:
        return self._admin_hash is not None

    def front_trusted(self, client_host: str | None, secret: str | None) -> bool:
        """A trusted front proves itself by the shared secret or by its address."""
        if secret is not None and self._front_hash is not None:
            return same_hash(self._front_hash, hash_secret(secret))
        if client_host is None or not self._front_nets:
            return False
        try:
            address = ipaddress.ip_address(client_host)
        except ValueError:
            return False
        return any(address in net for net in self._front_nets)

    def front(self, identity: str) -> Principal:
        """The principal of a user a trusted front vouched for."""
        found = self._fronts.get(identity)
        if found is None:
            if not identity or len(identity) > _MAX_IDENTITY or not identity.isprintable():
                raise Unauthorized("bad identity header from the trusted front")
            ident = "front:" + identity
            limits = self._front_limits
            limiter = self.limiters.get(ident, limits) if limits.any else None
            found = Principal(ident, identity, limiter=limiter, sink=self.usage.add)
            if len(self._fronts) < 100_000:
                self._fronts[identity] = found
        return found

    # -- what model routes call ----------------------------------------------------
    def admit_request(self, scope: Any, body: dict[str, Any], typed: str, *names: str) -> None:
        """After the route resolved the model: the key's allow-list (403) and the
        request ceilings (400)."""
        allow_model(scope, typed, *names)
        settings = self.settings
        if settings.max_messages is not None or settings.max_tokens_limit is not None:
            check_ceilings(
                body, max_messages=settings.max_messages, max_tokens=settings.max_tokens_limit
            )

    def meter(self, scope: Any, model: str) -> Meter | None:
        """Where a model route reports the tokens the engine said it used."""
        principal = principal_of(scope)
        return Meter(principal, model) if principal is not None else None

    # -- administration (off the hot path) -------------------------------------
    async def create(
        self,
        name: str,
        *,
        models: tuple[str, ...] = (),
        limits: Limits | None = None,
        expires_at: float | None = None,
    ) -> tuple[KeyRecord, str]:
        record, secret = new_record(name, models=models, limits=limits, expires_at=expires_at)
        await self.store.insert_key(record)
        self._put(record)
        return record, secret

    async def keys(self) -> list[KeyRecord]:
        return await self.store.keys()

    async def revoke(self, key_id: str) -> KeyRecord | None:
        record = await self.store.revoke(key_id, time.time())
        if record is not None:
            self._put(record)
        return record

    async def rotate(self, key_id: str) -> tuple[KeyRecord, str] | None:
        secret = new_secret()
        record = await self.store.rehash(key_id, secret[:SHOWN], hash_secret(secret), time.time())
        if record is None:
            return None
        self._put(record)
        return record, secret

    async def usage_rows(
        self, *, since: str | None = None, key_id: str | None = None
    ) -> list[UsageRow]:
        """Stored usage plus what is counted but not yet written."""
        rows = await self.store.usage(since=since, key_id=key_id)
        return merge_usage(
            rows,
            [
                r
                for r in self.usage.pending()
                if (since is None or r.day >= since) and (key_id is None or r.key_id == key_id)
            ],
        )


def merge_usage(*groups: list[UsageRow]) -> list[UsageRow]:
    totals: dict[tuple[str, str, str], UsageRow] = {}
    for rows in groups:
        for row in rows:
            bucket = (row.day, row.key_id, row.model)
            seen = totals.get(bucket)
            totals[bucket] = (
                row
                if seen is None
                else replace(
                    seen,
                    requests=seen.requests + row.requests,
                    prompt_tokens=seen.prompt_tokens + row.prompt_tokens,
                    completion_tokens=seen.completion_tokens + row.completion_tokens,
                )
            )
    return [totals[b] for b in sorted(totals)]
