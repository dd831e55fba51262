"""``vllama keys create|list|revoke|rotate``: API keys, in the key store.

Like ``engine``, these act on local state (the store the settings name: SQLite
in the data directory, or PostgreSQL by ``database_url``), so they work with
or without a running server; a running gateway sees the change within
``auth_refresh_interval`` (1 s by default). The admin HTTP API (``/admin/keys``)
does the same over the network. A secret is printed once, alone on stdout,
and never stored.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from vllama.auth.keys import (
    SHOWN,
    KeyRecord,
    Limits,
    hash_secret,
    new_record,
    new_secret,
    parse_expires,
)
from vllama.auth.store import Store, StoreError, open_store
from vllama.cli.status import ExitStatus
from vllama.settings import Settings, SettingsError, load_settings

T = TypeVar("T")


def store_settings(home: Path | None, database_url: str | None, config: Path | None) -> Settings:
    try:
        return load_settings({"home": home, "database_url": database_url}, config_file=config)
    except SettingsError as err:
        raise click.ClickException(f"bad configuration: {err}") from err


def with_store(settings: Settings, action: Callable[[Store], Awaitable[T]]) -> T:
    """Open the configured store, run ``action`` on it, close it."""
    url = settings.database_url.get_secret_value() if settings.database_url else None

    async def run() -> T:
        store = open_store(url, settings.home)
        await store.open()
        try:
            return await action(store)
        finally:
            await store.close()

    try:
        return asyncio.run(run())
    except StoreError as err:
        raise click.ClickException(str(err)) from err


def store_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    fn = click.option("--config", type=click.Path(path_type=Path), help="TOML config file.")(fn)
    fn = click.option("--database-url", help="Key store (default: SQLite in the data directory).")(
        fn
    )
    return click.option("--home", type=click.Path(path_type=Path), help="Data directory.")(fn)


def _table(records: list[KeyRecord]) -> None:
    click.echo(
        f"{'ID':17}{'NAME':20}{'PREFIX':11}{'MODELS':22}{'RPM':>7}{'TPM':>9}{'CONC':>6}  STATE"
    )
    for r in records:
        state = (
            "revoked" if r.revoked_at is not None else ("active" if r.usable(_now()) else "expired")
        )
        expires = r.public()["expires_at"]
        state += f" (expires {expires})" if expires and state == "active" else ""
        models = ",".join(r.models) or "*"
        lim = r.limits
        click.echo(
            f"{r.id:17}{r.name[:19]:20}{r.prefix + '…':11}{models[:21]:22}"
            f"{_n(lim.rpm):>7}{_n(lim.tpm):>9}{_n(lim.max_concurrency):>6}  {state}"
        )


def _n(value: int | None) -> str:
    return "-" if value is None else str(value)


def _now() -> float:
    return time.time()


@click.group("keys")
def keys_group() -> None:
    """Create, list, revoke and rotate API keys."""


@keys_group.command("create")
@click.option("--name", required=True, help="Who or what the key is for.")
@click.option("--models", help="Comma-separated models it may use (default: all).")
@click.option("--rpm", type=click.IntRange(min=1), help="Requests per minute.")
@click.option("--tpm", type=click.IntRange(min=1), help="Tokens per minute (prompt + output).")
@click.option("--max-concurrency", type=click.IntRange(min=1), help="Requests at once.")
@click.option("--expires", help="30d, 12h, 2w, an ISO date, or never (default).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@store_options
def create(
    name: str,
    models: str | None,
    rpm: int | None,
    tpm: int | None,
    max_concurrency: int | None,
    expires: str | None,
    as_json: bool,
    home: Path | None,
    database_url: str | None,
    config: Path | None,
) -> None:
    """Create a key and print its secret (shown this once only)."""
    try:
        expires_at = parse_expires(expires)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--expires") from err
    allowed = tuple(m.strip() for m in (models or "").split(",") if m.strip())
    record, secret = new_record(
        name, models=allowed, limits=Limits(rpm, tpm, max_concurrency), expires_at=expires_at
    )
    settings = store_settings(home, database_url, config)
    with_store(settings, lambda store: store.insert_key(record))
    if as_json:
        click.echo(json.dumps({**record.public(), "key": secret}))
        return
    click.echo(f"created {record.id} ({name}); the secret is shown once:", err=True)
    click.echo(secret)


@keys_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@store_options
def list_(as_json: bool, home: Path | None, database_url: str | None, config: Path | None) -> None:
    """List keys (never their secrets)."""
    settings = store_settings(home, database_url, config)
    records = with_store(settings, lambda store: store.keys())
    if as_json:
        click.echo(json.dumps([r.public() for r in records]))
    else:
        _table(records)


@keys_group.command("revoke")
@click.argument("key_id")
@store_options
def revoke(key_id: str, home: Path | None, database_url: str | None, config: Path | None) -> None:
    """Revoke a key: running gateways refuse it within auth_refresh_interval."""
    settings = store_settings(home, database_url, config)
    record = with_store(settings, lambda store: store.revoke(key_id, _now()))
    if record is None:
        click.echo(f"no key {key_id}", err=True)
        raise SystemExit(ExitStatus.ERROR)
    click.echo(f"revoked {record.id} ({record.name})", err=True)


@keys_group.command("rotate")
@click.argument("key_id")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@store_options
def rotate(
    key_id: str, as_json: bool, home: Path | None, database_url: str | None, config: Path | None
) -> None:
    """Give a key a new secret (same id, limits and usage); the old one stops working."""
    secret = new_secret()
    settings = store_settings(home, database_url, config)
    record = with_store(
        settings, lambda store: store.rehash(key_id, secret[:SHOWN], hash_secret(secret), _now())
    )
    if record is None:
        click.echo(f"no active key {key_id}", err=True)
        raise SystemExit(ExitStatus.ERROR)
    if as_json:
        click.echo(json.dumps({**record.public(), "key": secret}))
        return
    click.echo(f"rotated {record.id} ({record.name}); the new secret is shown once:", err=True)
    click.echo(secret)
