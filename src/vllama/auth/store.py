"""Durable auth state: keys and usage, in SQLite (default) or PostgreSQL.

SQLite lives in the data directory and needs no server; PostgreSQL (by URL)
lets several gateway replicas share keys and usage. Both run the same SQL,
written once with ``?`` placeholders (numbered ``$n`` for PostgreSQL), always
parameterised: no value is ever formatted into a statement. The schema is
versioned (``vllama_schema``); ``open`` applies missing migrations in one
transaction, under a lock, so replicas starting together do not race.

Nothing here is called on a request's hot path: the service mirrors the key
table in memory and writes usage in batches.
"""

from __future__ import annotations

import asyncio
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from vllama.auth.keys import KeyRecord, Limits

#: (version, statements). Append, never edit: a released migration is history.
MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (
        1,
        (
            """CREATE TABLE vllama_keys (
                id TEXT PRIMARY KEY,
                name TEXT NOT NULL,
                prefix TEXT NOT NULL,
                hash TEXT NOT NULL UNIQUE,
                models TEXT NOT NULL,
                rpm BIGINT,
                tpm BIGINT,
                max_concurrency BIGINT,
                created_at DOUBLE PRECISION NOT NULL,
                expires_at DOUBLE PRECISION,
                revoked_at DOUBLE PRECISION,
                updated_at DOUBLE PRECISION NOT NULL
            )""",
            """CREATE TABLE vllama_usage (
                key_id TEXT NOT NULL,
                model TEXT NOT NULL,
                day TEXT NOT NULL,
                requests BIGINT NOT NULL,
                prompt_tokens BIGINT NOT NULL,
                completion_tokens BIGINT NOT NULL,
                PRIMARY KEY (key_id, model, day)
            )""",
        ),
    ),
)

_KEY_COLUMNS = (
    "id, name, prefix, hash, models, rpm, tpm, max_concurrency,"
    " created_at, expires_at, revoked_at, updated_at"
)
_USAGE_UPSERT = (
    "INSERT INTO vllama_usage (key_id, model, day, requests, prompt_tokens, completion_tokens)"
    " VALUES (?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (key_id, model, day) DO UPDATE SET"
    " requests = vllama_usage.requests + excluded.requests,"
    " prompt_tokens = vllama_usage.prompt_tokens + excluded.prompt_tokens,"
    " completion_tokens = vllama_usage.completion_tokens + excluded.completion_tokens"
)


class StoreError(Exception):
    """The database failed or is unreachable; the message names which."""


@dataclass(frozen=True)
class UsageRow:
    key_id: str
    model: str
    day: str  #: YYYY-MM-DD, UTC
    requests: int
    prompt_tokens: int
    completion_tokens: int


def _record(row: Sequence[Any]) -> KeyRecord:
    models = orjson.loads(row[4]) if row[4] else []
    return KeyRecord(
        id=row[0],
        name=row[1],
        prefix=row[2],
        hash=row[3],
        models=tuple(str(m) for m in models),
        limits=Limits(rpm=row[5], tpm=row[6], max_concurrency=row[7]),
        created_at=float(row[8]),
        expires_at=None if row[9] is None else float(row[9]),
        revoked_at=None if row[10] is None else float(row[10]),
        updated_at=float(row[11]),
    )


def _params(record: KeyRecord) -> tuple[Any, ...]:
    return (
        record.id,
        record.name,
        record.prefix,
        record.hash,
        orjson.dumps(list(record.models)).decode(),
        record.limits.rpm,
        record.limits.tpm,
        record.limits.max_concurrency,
        record.created_at,
        record.expires_at,
        record.revoked_at,
        record.updated_at,
    )


class Store(ABC):
    """The queries, once; subclasses only run them."""

    name: str = "store"

    # -- what a backend provides ------------------------------------------
    @abstractmethod
    async def open(self) -> None:
        """Connect and bring the schema up to date."""

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Sequence[Any]]: ...

    @abstractmethod
    async def _execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        """Run one statement; the number of rows it changed."""

    @abstractmethod
    async def _execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        """One statement over many rows, in one transaction."""

    # -- keys ---------------------------------------------------------------
    async def insert_key(self, record: KeyRecord) -> None:
        marks = ", ".join("?" * len(_params(record)))
        await self._execute(
            f"INSERT INTO vllama_keys ({_KEY_COLUMNS}) VALUES ({marks})",  # noqa: S608
            _params(record),
        )

    async def keys(self) -> list[KeyRecord]:
        rows = await self._fetch(
            f"SELECT {_KEY_COLUMNS} FROM vllama_keys ORDER BY created_at, id"  # noqa: S608
        )
        return [_record(r) for r in rows]

    async def key(self, key_id: str) -> KeyRecord | None:
        rows = await self._fetch(
            f"SELECT {_KEY_COLUMNS} FROM vllama_keys WHERE id = ?",  # noqa: S608
            (key_id,),
        )
        return _record(rows[0]) if rows else None

    async def fingerprint(self) -> tuple[int, float]:
        """Changes whenever a key is added, revoked or rotated: a cheap poll."""
        rows = await self._fetch("SELECT COUNT(*), COALESCE(SUM(updated_at), 0) FROM vllama_keys")
        return int(rows[0][0]), float(rows[0][1])

    async def revoke(self, key_id: str, at: float) -> KeyRecord | None:
        await self._execute(
            "UPDATE vllama_keys SET revoked_at = ?, updated_at = ?"
            " WHERE id = ? AND revoked_at IS NULL",
            (at, at, key_id),
        )
        return await self.key(key_id)

    async def rehash(self, key_id: str, prefix: str, digest: str, at: float) -> KeyRecord | None:
        """Rotation: the same key (id, limits, usage) under a new secret."""
        changed = await self._execute(
            "UPDATE vllama_keys SET prefix = ?, hash = ?, updated_at = ?"
            " WHERE id = ? AND revoked_at IS NULL",
            (prefix, digest, at, key_id),
        )
        return await self.key(key_id) if changed else None

    # -- usage --------------------------------------------------------------
    async def add_usage(self, rows: Sequence[UsageRow]) -> None:
        if rows:
            await self._execute_many(
                _USAGE_UPSERT,
                [
                    (r.key_id, r.model, r.day, r.requests, r.prompt_tokens, r.completion_tokens)
                    for r in rows
                ],
            )

    async def usage(self, *, since: str | None = None, key_id: str | None = None) -> list[UsageRow]:
        sql = (
            "SELECT key_id, model, day, requests, prompt_tokens, completion_tokens"
            " FROM vllama_usage WHERE day >= ? AND (CAST(? AS TEXT) IS NULL OR key_id = ?)"
            " ORDER BY day, key_id, model"
        )
        rows = await self._fetch(sql, (since or "0000-00-00", key_id, key_id))
        return [UsageRow(r[0], r[1], r[2], int(r[3]), int(r[4]), int(r[5])) for r in rows]


def _pending(current: int) -> list[tuple[int, tuple[str, ...]]]:
    return [(v, statements) for v, statements in MIGRATIONS if v > current]


class SQLiteStore(Store):
    """SQLite through the stdlib driver, one connection, calls run in a thread.

    WAL mode and a busy timeout let the CLI write while a server reads.
    """

    name = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        await asyncio.to_thread(self._open)

    def _open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=10, check_same_thread=False)
            db.isolation_level = None  # explicit transactions only
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("CREATE TABLE IF NOT EXISTS vllama_schema (version BIGINT NOT NULL)")
            db.execute("BEGIN IMMEDIATE")
            try:
                current = db.execute("SELECT COALESCE(MAX(version), 0) FROM vllama_schema")
                for version, statements in _pending(int(current.fetchone()[0])):
                    for statement in statements:
                        db.execute(statement)
                    db.execute("INSERT INTO vllama_schema (version) VALUES (?)", (version,))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StoreError(f"SQLite database {self.path}: {exc}") from exc
        self._db = db

    async def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            await asyncio.to_thread(db.close)

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            raise StoreError("SQLite store is not open")
        return self._db

    async def _run(self, fn: Any, *args: Any) -> Any:
        async with self._lock:
            try:
                return await asyncio.to_thread(fn, *args)
            except sqlite3.Error as exc:
                raise StoreError(f"SQLite database {self.path}: {exc}") from exc

    async def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Sequence[Any]]:
        db = self._conn()
        rows: list[Sequence[Any]] = await self._run(
            lambda: db.execute(sql, tuple(params)).fetchall()
        )
        return rows

    async def _execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        db = self._conn()
        count: int = await self._run(lambda: db.execute(sql, tuple(params)).rowcount)
        return count

    async def _execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        db = self._conn()

        def many() -> None:
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executemany(sql, [tuple(r) for r in rows])
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

        await self._run(many)


def numbered(sql: str) -> str:
    """``?`` placeholders as PostgreSQL's ``$1, $2, ...`` (our SQL has no ``?``
    inside literals)."""
    parts = sql.split("?")
    out = [parts[0]]
    for i, part in enumerate(parts[1:], start=1):
        out.append(f"${i}{part}")
    return "".join(out)


class PostgresStore(Store):
    """PostgreSQL through asyncpg's pool, for several replicas sharing state."""

    name = "postgresql"

    def __init__(self, url: str) -> None:
        self.url = url
        self._pool: Any = None

    def _where(self) -> str:
        """The server, without user or password, for messages."""
        return self.url.rsplit("@", 1)[-1].split("?", 1)[0]

    async def open(self) -> None:
        import asyncpg

        try:
            self._pool = await asyncpg.create_pool(self.url, min_size=1, max_size=4)
            async with self._pool.acquire() as conn, conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock(7242525)")
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS vllama_schema (version BIGINT NOT NULL)"
                )
                current = await conn.fetchval("SELECT COALESCE(MAX(version), 0) FROM vllama_schema")
                for version, statements in _pending(int(current)):
                    for statement in statements:
                        await conn.execute(statement)
                    await conn.execute("INSERT INTO vllama_schema (version) VALUES ($1)", version)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            await self.close()
            raise StoreError(f"PostgreSQL at {self._where()}: {exc}") from exc

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    def _ready(self) -> Any:
        if self._pool is None:
            raise StoreError("PostgreSQL store is not open")
        return self._pool

    async def _fetch(self, sql: str, params: Sequence[Any] = ()) -> list[Sequence[Any]]:
        import asyncpg

        try:
            rows: list[Sequence[Any]] = await self._ready().fetch(numbered(sql), *params)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreError(f"PostgreSQL at {self._where()}: {exc}") from exc
        return rows

    async def _execute(self, sql: str, params: Sequence[Any] = ()) -> int:
        import asyncpg

        try:
            status: str = await self._ready().execute(numbered(sql), *params)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreError(f"PostgreSQL at {self._where()}: {exc}") from exc
        tail = status.rsplit(" ", 1)[-1]
        return int(tail) if tail.isdigit() else 0

    async def _execute_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        import asyncpg

        try:
            async with self._ready().acquire() as conn, conn.transaction():
                await conn.executemany(numbered(sql), [tuple(r) for r in rows])
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise StoreError(f"PostgreSQL at {self._where()}: {exc}") from exc


def open_store(url: str | None, home: Path) -> Store:
    """The store a URL names: ``postgresql://...``, ``sqlite:///path``, or
    (None) ``vllama.db`` in the data directory. Not yet opened."""
    if url is None or url == "":
        return SQLiteStore(home / "vllama.db")
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresStore(url)
    if url.startswith("sqlite:"):
        path = url.removeprefix("sqlite:").removeprefix("//")
        return SQLiteStore(Path(path).expanduser())
    raise StoreError("database_url must start with postgresql://, postgres:// or sqlite:")
