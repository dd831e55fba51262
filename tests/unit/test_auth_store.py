"""The key and usage store, the same tests against SQLite and a real PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.pg import private_schema
from vllama.auth.keys import Limits, hash_secret, new_record
from vllama.auth.service import AuthService
from vllama.auth.store import (
    MIGRATIONS,
    PostgresStore,
    SQLiteStore,
    Store,
    StoreError,
    UsageRow,
    open_store,
)
from vllama.errors import Unauthorized
from vllama.settings import Settings, load_settings


@pytest.fixture(params=["sqlite", "postgresql"])
async def url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/keys.db"
        return
    async for found in private_schema():
        yield found


async def opened(url: str, home: Path) -> Store:
    store = open_store(url, home)
    await store.open()
    return store


def settings(url: str, home: Path, **extra: str) -> Settings:
    env = {"VLLAMA_DATABASE_URL": url, "VLLAMA_HOME": str(home), **extra}
    return load_settings(environ=env)


def test_urls_pick_the_backend(tmp_path: Path) -> None:
    assert isinstance(open_store(None, tmp_path), SQLiteStore)
    default = open_store(None, tmp_path)
    assert isinstance(default, SQLiteStore)
    assert default.path == tmp_path / "vllama.db"
    assert isinstance(open_store("postgresql://u:p@h/db", tmp_path), PostgresStore)
    assert isinstance(open_store("postgres://u:p@h/db", tmp_path), PostgresStore)


async def test_migrations_apply_once(url: str, tmp_path: Path) -> None:
    first = await opened(url, tmp_path)
    record, _ = new_record("a")
    await first.insert_key(record)
    await first.close()
    second = await opened(url, tmp_path)  # migrating again is a no-op, data kept
    rows = await second._fetch("SELECT version FROM vllama_schema")
    assert sorted(int(r[0]) for r in rows) == [v for v, _ in MIGRATIONS]
    assert [k.id for k in await second.keys()] == [record.id]
    await second.close()


async def test_keys_round_trip_revoke_and_rotate(url: str, tmp_path: Path) -> None:
    store = await opened(url, tmp_path)
    try:
        record, secret = new_record(
            "alice", models=("smollm2:135m",), limits=Limits(10, 1000, 2), expires_at=2e9
        )
        await store.insert_key(record)
        [found] = await store.keys()
        assert found == record
        assert found.hash == hash_secret(secret)
        before = await store.fingerprint()
        rotated = await store.rehash(record.id, "vll-XXXX", hash_secret("vll-new"), time.time())
        assert rotated is not None
        assert rotated.hash == hash_secret("vll-new")
        assert rotated.limits == record.limits
        assert await store.fingerprint() != before
        revoked = await store.revoke(record.id, time.time())
        assert revoked is not None
        assert revoked.revoked_at is not None
        assert await store.rehash(record.id, "p", "h", time.time()) is None  # revoked stays so
        assert await store.revoke("key_missing", time.time()) is None
    finally:
        await store.close()


async def test_values_are_parameters_never_sql(url: str, tmp_path: Path) -> None:
    store = await opened(url, tmp_path)
    try:
        evil = "x'); DROP TABLE vllama_keys; --"
        record, _ = new_record(evil, models=(evil,))
        await store.insert_key(record)
        assert await store.revoke(evil, time.time()) is None
        assert await store.usage(key_id="' OR '1'='1") == []
        [found] = await store.keys()
        assert found.name == evil
        assert found.models == (evil,)
    finally:
        await store.close()


async def test_usage_upserts_add_up(url: str, tmp_path: Path) -> None:
    store = await opened(url, tmp_path)
    try:
        await store.add_usage(
            [
                UsageRow("k1", "m", "2026-01-01", 1, 10, 20),
                UsageRow("k2", "m", "2026-01-02", 2, 1, 1),
            ]
        )
        await store.add_usage([UsageRow("k1", "m", "2026-01-01", 3, 5, 6)])
        rows = await store.usage()
        assert rows == [
            UsageRow("k1", "m", "2026-01-01", 4, 15, 26),
            UsageRow("k2", "m", "2026-01-02", 2, 1, 1),
        ]
        assert [r.key_id for r in await store.usage(since="2026-01-02")] == ["k2"]
        assert [r.key_id for r in await store.usage(key_id="k1")] == ["k1"]
    finally:
        await store.close()


async def test_service_verifies_from_memory(url: str, tmp_path: Path) -> None:
    service = AuthService(settings(url, tmp_path))
    await service.start()
    try:
        record, secret = await service.create("alice")
        expired, old = await service.create("old", expires_at=time.time() - 1)
        assert service.verify(secret).id == record.id
        for bad in ("vll-wrong", secret + "x", "", old):
            with pytest.raises(Unauthorized):
                service.verify(bad)
        await service.revoke(record.id)
        with pytest.raises(Unauthorized, match="revoked"):
            service.verify(secret)  # at once on this process
        rotated = await service.rotate(expired.id)
        assert rotated is not None
        with pytest.raises(Unauthorized, match="expired"):
            service.verify(rotated[1])
    finally:
        await service.stop()


async def test_a_replica_sees_revocation_within_the_refresh_interval(
    url: str, tmp_path: Path
) -> None:
    one = AuthService(settings(url, tmp_path, VLLAMA_AUTH_REFRESH_INTERVAL="0.2"))
    two = AuthService(settings(url, tmp_path, VLLAMA_AUTH_REFRESH_INTERVAL="0.2"))
    await one.start()
    await two.start()
    try:
        record, secret = await one.create("shared")
        await asyncio.sleep(0.5)
        assert two.verify(secret).id == record.id  # created elsewhere, now known here
        await one.revoke(record.id)
        await asyncio.sleep(0.5)
        with pytest.raises(Unauthorized):
            two.verify(secret)
    finally:
        await one.stop()
        await two.stop()


async def test_usage_is_batched_and_flushed_on_stop(url: str, tmp_path: Path) -> None:
    service = AuthService(settings(url, tmp_path, VLLAMA_USAGE_FLUSH_INTERVAL="3600"))
    await service.start()
    record, secret = await service.create("alice")
    principal = service.verify(secret)
    principal.record("m", 3, 4)
    principal.record("m", 5, 6)
    assert await service.store.usage() == []  # nothing written on the request path
    [pending] = await service.usage_rows()
    assert (pending.requests, pending.prompt_tokens, pending.completion_tokens) == (2, 8, 10)
    await service.stop()
    store = await opened(url, tmp_path)
    try:
        [row] = await store.usage()
        assert (row.key_id, row.requests, row.prompt_tokens, row.completion_tokens) == (
            record.id,
            2,
            8,
            10,
        )
    finally:
        await store.close()


async def test_a_failing_database_loses_neither_keys_nor_usage(tmp_path: Path) -> None:
    service = AuthService(settings(f"sqlite:///{tmp_path}/keys.db", tmp_path))
    await service.start()
    _, secret = await service.create("alice")
    service.verify(secret).record("m", 1, 2)
    store = service.store
    assert isinstance(store, SQLiteStore)
    assert store._db is not None
    store._db.close()  # the database goes away under the running service
    with pytest.raises(StoreError):
        await service.reload()
    assert service.verify(secret).name == "alice"  # the last copy of the keys still serves
    with pytest.raises(StoreError):
        await service.usage.flush()
    [kept] = service.usage.pending()
    assert (kept.requests, kept.prompt_tokens, kept.completion_tokens) == (1, 1, 2)
    store._db = None
    await service.stop()  # logs the loss instead of raising
