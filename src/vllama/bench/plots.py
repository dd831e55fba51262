"""PNG plots of a sweep: one line per target against concurrency.

- ``<stem>-throughput.png``: output tokens/s (requests/s where no target
  reported tokens);
- ``<stem>-ttft.png``: time to first token, p50 (solid) and p99 (dashed).

Drawn with matplotlib's object API on its Agg canvas (no pyplot, no global
figure state, no display needed). The rows are :func:`vllama.bench.report.comparison_rows`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


def series(rows: Sequence[Mapping[str, Any]], key: str) -> dict[str, list[tuple[int, float]]]:
    """Per target (in first-seen order), the (concurrency, value) points of ``key``
    that have a value, sorted by concurrency."""
    out: dict[str, list[tuple[int, float]]] = {}
    for row in rows:
        points = out.setdefault(str(row["target"]), [])
        value = row.get(key)
        if isinstance(value, int | float):
            points.append((int(row["concurrency"]), float(value)))
    return {name: sorted(points) for name, points in out.items()}


def _axes(figure: Figure, title: str, ylabel: str, levels: Sequence[int]) -> Axes:
    ax = figure.add_subplot()
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("concurrent requests")
    ax.set_ylabel(ylabel)
    if levels and max(levels) / max(1, min(levels)) >= 8:
        ax.set_xscale("log")
    ax.set_xticks(sorted(set(levels)), [str(c) for c in sorted(set(levels))])
    ax.grid(True, alpha=0.3)
    return ax


def _save(figure: Figure, path: Path) -> Path:
    FigureCanvasAgg(figure)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    return path


def write_plots(stem: Path, rows: Sequence[Mapping[str, Any]], *, title: str) -> list[Path]:
    """Write the throughput and TTFT plots next to ``stem``; return their paths."""
    levels = [int(row["concurrency"]) for row in rows]
    tokens = series(rows, "tokens_per_s")
    key, ylabel = "tokens_per_s", "output tokens/s"
    if not any(tokens.values()):
        key, ylabel = "req_per_s", "requests/s"
    figure = Figure(figsize=(7, 4.5))
    ax = _axes(figure, f"{title}: throughput", ylabel, levels)
    for name, points in series(rows, key).items():
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", label=name)
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    paths = [_save(figure, stem.with_name(stem.name + "-throughput.png"))]

    figure = Figure(figsize=(7, 4.5))
    ax = _axes(figure, f"{title}: time to first token", "ms", levels)
    p99 = series(rows, "ttft_p99")
    for i, (name, points) in enumerate(series(rows, "ttft_p50").items()):
        color = f"C{i}"
        if points:
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, [y * 1000 for y in ys], marker="o", color=color, label=f"{name} p50")
        if p99.get(name):
            xs, ys = zip(*p99[name], strict=True)
            ax.plot(xs, [y * 1000 for y in ys], marker="x", linestyle="--", color=color,
                    label=f"{name} p99")  # fmt: skip
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=8)
    paths.append(_save(figure, stem.with_name(stem.name + "-ttft.png")))
    return paths
