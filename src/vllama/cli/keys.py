"""``vllama keys create|list|revoke|rotate``: API keys, over HTTP or in the store.

Two ways to reach the keys, one output:

- ``--url http://host:port`` with the admin key (``--admin-key`` or
  ``VLLAMA_ADMIN_KEY``): the running gateway's admin API (``/admin/keys``), as
  every CLI command but ``serve`` talks to the server; that gateway applies
  the change at once, and works on any machine that can reach it;
- without ``--url``: the store the settings name (SQLite in the data
  directory, or PostgreSQL by ``database_url``), like ``engine`` acts on local
  state, so keys can be made before the first start or while no gateway runs;
  a running gateway sees the change within ``auth_refresh_interval`` (1 s).

A secret is printed once, alone on stdout, and never stored.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from vllama.auth.keys import (
    SHOWN,
    Limits,
    hash_secret,
    new_record,
    new_secret,
    parse_expires,
)
from vllama.auth.store import Store, StoreError, open_store
from vllama.cli.admin_api import AdminAPI
from vllama.cli.client import ClientError
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


@dataclass(frozen=True)
class Where:
    """Where the keys are, from the options every ``keys``/``usage`` command takes."""

    url: str | None
    admin_key: str | None
    home: Path | None
    database_url: str | None
    config: Path | None

    def api(self) -> AdminAPI | None:
        """The gateway to talk to, or None for the store."""
        if self.url is None:
            return None
        if not self.admin_key:
            raise click.UsageError("--url needs the admin key: --admin-key or VLLAMA_ADMIN_KEY")
        try:
            return AdminAPI(self.url, self.admin_key)
        except ClientError as err:
            raise click.UsageError(err.message) from err

    def settings(self) -> Settings:
        return store_settings(self.home, self.database_url, self.config)


def store_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The options saying where the keys are (a running gateway, ``--url``, or
    the store), handed to the command as one ``where: Where``."""

    @functools.wraps(fn)
    def command(**kwargs: Any) -> Any:
        fields = ("url", "admin_key", "home", "database_url", "config")
        where = Where(**{name: kwargs.pop(name) for name in fields})
        return fn(where=where, **kwargs)

    options = [
        click.option(
            "--url",
            help="A running gateway (http://host:port): use its admin API instead of the store.",
        ),
        click.option(
            "--admin-key",
            envvar="VLLAMA_ADMIN_KEY",
            help="The gateway's admin key, with --url (better: VLLAMA_ADMIN_KEY).",
        ),
        click.option("--home", type=click.Path(path_type=Path), help="Data directory."),
        click.option("--database-url", help="Key store (default: SQLite in the data directory)."),
        click.option("--config", type=click.Path(path_type=Path), help="TOML config file."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def over_http(call: Callable[[], T]) -> T:
    try:
        return call()
    except ClientError as err:
        raise click.ClickException(err.message) from err


def _state(key: dict[str, Any]) -> str:
    if key.get("revoked_at"):
        return "revoked"
    expires = key.get("expires_at")
    if expires and datetime.fromisoformat(expires).timestamp() <= _now():
        return "expired"
    return f"active (expires {expires})" if expires else "active"


def _table(keys: list[dict[str, Any]]) -> None:
    """Keys as ``KeyRecord.public()`` (the admin API's shape) shows them."""
    click.echo(
        f"{'ID':17}{'NAME':20}{'PREFIX':11}{'MODELS':22}{'RPM':>7}{'TPM':>9}{'CONC':>6}  STATE"
    )
    for k in keys:
        models = ",".join(k.get("models") or ()) or "*"
        click.echo(
            f"{k['id']:17}{k['name'][:19]:20}{k['prefix'] + '…':11}{models[:21]:22}"
            f"{_n(k.get('rpm')):>7}{_n(k.get('tpm')):>9}{_n(k.get('max_concurrency')):>6}"
            f"  {_state(k)}"
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
    where: Where,
) -> None:
    """Create a key and print its secret (shown this once only)."""
    try:
        expires_at = parse_expires(expires)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--expires") from err
    allowed = tuple(m.strip() for m in (models or "").split(",") if m.strip())
    api = where.api()
    if api is not None:
        spec = {"name": name, "models": list(allowed), "rpm": rpm, "tpm": tpm}
        spec.update(max_concurrency=max_concurrency, expires=expires)
        created = over_http(lambda: api.create(spec))
        key_id, secret = created["id"], created.pop("key")
    else:
        limits = Limits(rpm, tpm, max_concurrency)
        record, secret = new_record(name, models=allowed, limits=limits, expires_at=expires_at)
        settings = where.settings()
        with_store(settings, lambda store: store.insert_key(record))
        created, key_id = record.public(), record.id
    if as_json:
        click.echo(json.dumps({**created, "key": secret}))
        return
    click.echo(f"created {key_id} ({name}); the secret is shown once:", err=True)
    click.echo(secret)


@keys_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@store_options
def list_(
    as_json: bool,
    where: Where,
) -> None:
    """List keys (never their secrets)."""
    api = where.api()
    if api is not None:
        keys = over_http(api.keys)
    else:
        settings = where.settings()
        keys = [r.public() for r in with_store(settings, lambda store: store.keys())]
    if as_json:
        click.echo(json.dumps(keys))
    else:
        _table(keys)


@keys_group.command("revoke")
@click.argument("key_id")
@store_options
def revoke(
    key_id: str,
    where: Where,
) -> None:
    """Revoke a key: refused at once by the gateway at --url, by others within
    auth_refresh_interval."""
    api = where.api()
    if api is not None:
        found = over_http(lambda: api.revoke(key_id))
    else:
        settings = where.settings()
        record = with_store(settings, lambda store: store.revoke(key_id, _now()))
        found = None if record is None else record.public()
    if found is None:
        click.echo(f"no key {key_id}", err=True)
        raise SystemExit(ExitStatus.ERROR)
    click.echo(f"revoked {found['id']} ({found['name']})", err=True)


@keys_group.command("rotate")
@click.argument("key_id")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@store_options
def rotate(
    key_id: str,
    as_json: bool,
    where: Where,
) -> None:
    """Give a key a new secret (same id, limits and usage); the old one stops working."""
    api = where.api()
    if api is not None:
        found = over_http(lambda: api.rotate(key_id))
        secret = "" if found is None else found.pop("key")
    else:
        secret = new_secret()
        settings = where.settings()
        record = with_store(
            settings,
            lambda store: store.rehash(key_id, secret[:SHOWN], hash_secret(secret), _now()),
        )
        found = None if record is None else record.public()
    if found is None:
        click.echo(f"no active key {key_id}", err=True)
        raise SystemExit(ExitStatus.ERROR)
    if as_json:
        click.echo(json.dumps({**found, "key": secret}))
        return
    click.echo(f"rotated {found['id']} ({found['name']}); the new secret is shown once:", err=True)
    click.echo(secret)
