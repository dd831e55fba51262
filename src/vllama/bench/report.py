"""Benchmark reports: rich tables for people, Markdown for issues, JSON for the record.

A :class:`Table` is rows of plain values (seconds, ratios, counts) plus
columns that say how to show them, so the same rows print on the console, go
into the Markdown file, and are kept raw in the JSON dump next to every sample
and the settings of the run.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal

import orjson
from rich.console import Console
from rich.table import Table as RichTable

from vllama.bench.stats import Summary, difference, ratio

Kind = Literal["text", "int", "f1", "ms", "+ms", "x"]


@dataclass(frozen=True)
class Column:
    key: str
    header: str
    kind: Kind = "text"  #: ms/+ms: seconds shown in ms; x: a ratio; f1: one decimal


@dataclass
class Table:
    title: str
    columns: Sequence[Column]
    rows: list[dict[str, Any]] = field(default_factory=list)


_KNOWN = [
    Column("concurrency", "conc", "int"),
    Column("target", "target"),
    Column("req_per_s", "req/s", "f1"),
    Column("req_ratio", "req/s ratio", "x"),
    Column("tokens_per_s", "tok/s", "f1"),
    Column("tok_ratio", "tok/s ratio", "x"),
    Column("tokens_per_request", "tok/req", "f1"),
    *(Column(f"latency_p{q}", f"p{q} ms", "ms") for q in (50, 95, 99)),
    *(Column(f"ttft_p{q}", f"TTFT p{q} ms", "ms") for q in (50, 95, 99)),
    *(Column(f"itl_p{q}", f"ITL p{q} ms", "ms") for q in (50, 95, 99)),
    Column("added_p50", "added p50 ms", "+ms"),
    Column("added_p99", "added p99 ms", "+ms"),
    Column("added_ttft", "added TTFT ms", "+ms"),
    Column("gateway_cpu", "gateway CPU ms/req", "ms"),
    Column("engine_cpu", "engine CPU ms/req", "ms"),
    Column("errors", "errors", "int"),
]
KNOWN_COLUMNS = {c.key: c for c in _KNOWN}


def columns(*keys: str) -> list[Column]:
    """The standard columns for the keys of :func:`comparison_rows`' rows."""
    return [KNOWN_COLUMNS[key] for key in keys]


def format_value(value: object, kind: Kind) -> str:
    if value is None:
        return "—"
    if kind == "text" or not isinstance(value, int | float):
        return str(value)
    if kind == "int":
        return f"{value:.0f}"
    if kind == "f1":
        return f"{value:.1f}"
    if kind == "ms":
        return f"{value * 1000:.2f}"
    if kind == "+ms":
        return f"{value * 1000:+.2f}"
    return f"{value:.3f}"


def _cells(table: Table, row: Mapping[str, Any]) -> list[str]:
    return [format_value(row.get(c.key), c.kind) for c in table.columns]


def rich_table(table: Table) -> RichTable:
    out = RichTable(title=table.title, title_justify="left")
    for column in table.columns:
        out.add_column(column.header, justify="left" if column.kind == "text" else "right")
    for row in table.rows:
        out.add_row(*_cells(table, row))
    return out


def print_tables(console: Console, tables: Sequence[Table]) -> None:
    for table in tables:
        console.print(rich_table(table))


def markdown_table(table: Table) -> str:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    align = ["---" if c.kind == "text" else "---:" for c in table.columns]
    lines = [f"### {table.title}", "", line([c.header for c in table.columns]), line(align)]
    lines += [line(_cells(table, row)) for row in table.rows]
    return "\n".join(lines) + "\n"


def comparison_rows(
    levels: Mapping[int, Sequence[tuple[Summary, Mapping[str, Any]]]],
) -> list[dict[str, Any]]:
    """One row per target and level: its figures, its ``extra`` values (CPU
    time, ...) and, against the level's first target (the baseline), the ratios
    ``req_ratio``/``tok_ratio`` and the added ``added_p50``/``added_p99``/``added_ttft``."""
    rows: list[dict[str, Any]] = []
    for concurrency, entries in levels.items():
        base = entries[0][0]
        for i, (summary, extra) in enumerate(entries):
            row: dict[str, Any] = {**asdict(summary), **extra, "concurrency": concurrency}
            if i > 0:
                row["req_ratio"] = ratio(summary.req_per_s, base.req_per_s)
                row["tok_ratio"] = ratio(summary.tokens_per_s, base.tokens_per_s)
                row["added_p50"] = difference(summary.latency_p50, base.latency_p50)
                row["added_p99"] = difference(summary.latency_p99, base.latency_p99)
                row["added_ttft"] = difference(summary.ttft_p50, base.ttft_p50)
            rows.append(row)
    return rows


def machine() -> dict[str, Any]:
    """Where the figures were measured, for the record."""
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
    }


def markdown_report(
    title: str, settings: Mapping[str, Any], tables: Sequence[Table], notes: Sequence[str]
) -> str:
    parts = [f"# {title}", ""]
    parts += [f"- {note}" for note in notes]
    parts += ["", "<details><summary>settings</summary>", "", "```json"]
    parts += [orjson.dumps(settings, option=orjson.OPT_INDENT_2).decode(), "```", "</details>", ""]
    parts += [markdown_table(t) for t in tables]
    return "\n".join(parts)


def _redacted(obj: object) -> dict[str, Any]:
    """Dataclasses as dicts for the JSON dump, with any ``api_key`` left out."""
    if not is_dataclass(obj) or isinstance(obj, type):
        raise TypeError(f"cannot serialise {type(obj).__name__}")
    plain = {f.name: getattr(obj, f.name) for f in fields(obj)}
    if plain.get("api_key") is not None:
        plain["api_key"] = "<redacted>"
    return plain


def write_results(
    out_dir: Path,
    mode: str,
    *,
    title: str,
    settings: Mapping[str, Any],
    tables: Sequence[Table],
    notes: Sequence[str],
    runs: Sequence[Mapping[str, Any]],
) -> tuple[Path, Path]:
    """Write ``<mode>-<timestamp>.json`` (settings, tables, every sample of every
    run) and ``.md`` (the tables) under ``out_dir``; return both paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    json_path = out_dir / f"{mode}-{stamp}.json"
    md_path = json_path.with_suffix(".md")
    record = {
        "mode": mode,
        "title": title,
        "settings": settings,
        "machine": machine(),
        "notes": list(notes),
        "tables": [{"title": t.title, "rows": t.rows} for t in tables],
        "runs": list(runs),
    }
    options = orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATACLASS
    json_path.write_bytes(orjson.dumps(record, default=_redacted, option=options))
    md_path.write_text(markdown_report(title, settings, tables, notes))
    return json_path, md_path
