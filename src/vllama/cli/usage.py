"""``vllama usage``: requests and tokens per key, model and day.

With ``--url`` and the admin key it asks a running gateway (``/admin/usage``),
whose answer includes the counts it has not written yet; without, it reads the
store like ``vllama keys`` does, where a gateway writes its counts every
``usage_flush_interval`` seconds and on a graceful stop.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict

import click

from vllama.auth.store import Store, UsageRow
from vllama.auth.usage import utc_day
from vllama.cli.keys import Where, over_http, store_options, with_store

_FIELDS = ("key_id", "model", "day", "requests", "prompt_tokens", "completion_tokens")


@click.command("usage")
@click.option("--days", type=click.IntRange(min=1), default=30, show_default=True)
@click.option("--since", help="First day, YYYY-MM-DD (instead of --days).")
@click.option("--key", "key_id", help="Only this key id.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@store_options
def usage(
    days: int,
    since: str | None,
    key_id: str | None,
    as_json: bool,
    where: Where,
) -> None:
    """Show usage per key, model and UTC day."""
    first = since or utc_day(time.time() - 86400 * (days - 1))
    api = where.api()
    if api is not None:
        found = over_http(lambda: api.usage(since=first, key_id=key_id))
        names = {r["key_id"]: r["key_name"] for r in found if r.get("key_name") != r["key_id"]}
        rows = [UsageRow(**{f: r[f] for f in _FIELDS}) for r in found]
    else:
        settings = where.settings()

        async def read(store: Store) -> tuple[list[UsageRow], dict[str, str]]:
            rows = await store.usage(since=first, key_id=key_id)
            return rows, {k.id: k.name for k in await store.keys()}

        rows, names = with_store(settings, read)
    if as_json:
        click.echo(json.dumps([{**asdict(r), "key_name": names.get(r.key_id)} for r in rows]))
        return
    click.echo(f"{'DAY':12}{'KEY':28}{'MODEL':24}{'REQUESTS':>10}{'PROMPT':>12}{'OUTPUT':>12}")
    for r in rows:
        who = f"{names.get(r.key_id, '')} ({r.key_id})" if r.key_id in names else r.key_id
        click.echo(
            f"{r.day:12}{who[:27]:28}{r.model[:23]:24}"
            f"{r.requests:>10}{r.prompt_tokens:>12}{r.completion_tokens:>12}"
        )
    total = [
        sum(getattr(r, f) for r in rows) for f in ("requests", "prompt_tokens", "completion_tokens")
    ]
    click.echo(f"{'total':64}{total[0]:>10}{total[1]:>12}{total[2]:>12}")
