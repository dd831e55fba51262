"""Benchmark reports: rich tables for people, Markdown for issues, JSON for the record.

A :class:`Table` is rows of plain values (seconds, ratios, counts) plus
columns that say how to show them, so the same rows print on the console, go
into the Markdown file, and are kept raw in the JSON dump next to every sample
and the settings of the run; :mod:`vllama.bench.plots` draws PNGs from the
same rows.
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

from vllama.bench.stats import Summary, median, round_differences, round_ratios

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
    Column("sent", "sent", "int"),
    Column("max_tokens", "tok asked", "int"),
    Column("tokens_off", "tok≠asked", "int"),
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


# row key -> (Summary field, per-round ratio or difference) against the baseline
_COMPARED = {
    "req_ratio": ("req_per_s", round_ratios),
    "tok_ratio": ("tokens_per_s", round_ratios),
    "added_p50": ("latency_p50", round_differences),
    "added_p99": ("latency_p99", round_differences),
    "added_ttft": ("ttft_p50", round_differences),
}


def comparison_rows(
    levels: Mapping[int, Sequence[tuple[Summary, Mapping[str, Any]]]],
    rounds: Mapping[int, Sequence[Sequence[Summary]]] | None = None,
) -> list[dict[str, Any]]:
    """One row per target and level: its figures, its ``extra`` values (CPU
    time, ...) and, against the level's first target (the baseline), the ratios
    ``req_ratio``/``tok_ratio`` and the added ``added_p50``/``added_p99``/``added_ttft``.

    With ``rounds`` (per level, each target's summaries in round order, targets
    in the order of ``levels``) each comparison is the median of the per-round
    ones, which are kept too (``tok_ratio_rounds``, ...); without, it compares
    the medians."""
    rows: list[dict[str, Any]] = []
    for concurrency, entries in levels.items():
        base = entries[0][0]
        per_target = rounds[concurrency] if rounds is not None else None
        for i, (summary, extra) in enumerate(entries):
            row: dict[str, Any] = {**asdict(summary), **extra, "concurrency": concurrency}
            rows.append(row)
            if i == 0:
                continue
            for key, (metric, compare) in _COMPARED.items():
                if per_target is None:
                    row[key] = compare([summary], [base], metric)[0]
                else:
                    row[f"{key}_rounds"] = compare(per_target[i], per_target[0], metric)
                    row[key] = median(row[f"{key}_rounds"])
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
    title: str,
    settings: Mapping[str, Any],
    tables: Sequence[Table],
    notes: Sequence[str],
    images: Sequence[Path] = (),
) -> str:
    """Title, notes, settings (folded), tables, then ``images`` (linked by file name,
    so keep them beside the report)."""
    parts = [f"# {title}", ""]
    parts += [f"- {note}" for note in notes]
    parts += ["", "<details><summary>settings</summary>", "", "```json"]
    parts += [orjson.dumps(settings, option=orjson.OPT_INDENT_2).decode(), "```", "</details>", ""]
    parts += [markdown_table(t) for t in tables]
    parts += [f"![{image.stem}]({image.name})\n" for image in images]
    return "\n".join(parts)


def _redacted(obj: object) -> dict[str, Any]:
    """Dataclasses as dicts for the JSON dump, with any ``api_key`` left out."""
    if not is_dataclass(obj) or isinstance(obj, type):
        raise TypeError(f"cannot serialise {type(obj).__name__}")
    plain = {f.name: getattr(obj, f.name) for f in fields(obj)}
    if plain.get("api_key") is not None:
        plain["api_key"] = "<redacted>"
    return plain


@dataclass(frozen=True)
class ReportFiles:
    json: Path
    markdown: Path
    plots: list[Path]


def write_report(
    out_dir: Path,
    mode: str,
    *,
    title: str,
    settings: Mapping[str, Any],
    tables: Sequence[Table],
    notes: Sequence[str],
    runs: Sequence[object],
    plot_rows: Sequence[Mapping[str, Any]] | None = None,
) -> ReportFiles:
    """Write ``<mode>-<timestamp>.json`` (settings, tables, every sample of every
    run), ``.md`` (the tables) and, given ``plot_rows`` (:func:`comparison_rows`),
    the PNG plots beside them, linked from the Markdown."""
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    json_path = out_dir / f"{mode}-{stamp}.json"
    md_path = json_path.with_suffix(".md")
    images: list[Path] = []
    if plot_rows is not None:
        from vllama.bench.plots import write_plots  # matplotlib loads in ~0.5 s: only when asked

        images = write_plots(out_dir / f"{mode}-{stamp}", plot_rows, title=title)
    record = {
        "mode": mode,
        "title": title,
        "settings": settings,
        "machine": machine(),
        "notes": list(notes),
        "tables": [{"title": t.title, "rows": t.rows} for t in tables],
        "plots": [image.name for image in images],
        "runs": list(runs),
    }
    options = orjson.OPT_NON_STR_KEYS | orjson.OPT_PASSTHROUGH_DATACLASS
    json_path.write_bytes(orjson.dumps(record, default=_redacted, option=options))
    md_path.write_text(markdown_report(title, settings, tables, notes, images))
    return ReportFiles(json_path, md_path, images)


def write_results(
    out_dir: Path,
    mode: str,
    *,
    title: str,
    settings: Mapping[str, Any],
    tables: Sequence[Table],
    notes: Sequence[str],
    runs: Sequence[object],
) -> tuple[Path, Path]:
    """:func:`write_report` without plots; returns the JSON and Markdown paths."""
    files = write_report(
        out_dir, mode, title=title, settings=settings, tables=tables, notes=notes, runs=runs
    )
    return files.json, files.markdown
