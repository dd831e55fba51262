"""``vllama bench``: measure chat serving on one or more targets, side by side.

A target is any server speaking Ollama's ``/api/chat`` (NDJSON) or OpenAI's
``/v1/chat/completions`` (SSE): vLLama's two dialects, vLLM itself, Ollama,
llama.cpp's ``llama-server``. Every target gets the same prompts and the same
``max_tokens`` (with ``ignore_eos`` where the dialect allows), a warm-up, then
each concurrency level in interleaved rounds; a live table shows the runs,
and the results go to JSON (every sample, every target's settings), Markdown
and PNG plots. See docs/PERFORMANCE.md for the method.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import click
import psutil
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table as RichTable
from rich.text import Text

from vllama.bench.loadgen import Target, new_session, run
from vllama.bench.prompts import PromptError, load
from vllama.bench.report import Column, Table, columns, comparison_rows, print_tables, write_report
from vllama.bench.sweep import Plan, Progress, Run, SweepResult, sweep
from vllama.bench.targets import TargetError, describe, parse_target
from vllama.cli.status import ExitStatus
from vllama.settings import parse_ollama_host

DEFAULT_LEVELS = "1,5,10,50,100"
LEVEL = ("concurrency", "target")
THROUGHPUT = columns(*LEVEL, "sent", "errors", "req_per_s", "tokens_per_s", "tokens_per_request")
THROUGHPUT += columns("max_tokens", "tokens_off")
LATENCY = columns(*LEVEL, *(f"{m}_p{q}" for m in ("ttft", "itl", "latency") for q in (50, 95, 99)))
VERSUS = columns(*LEVEL, "req_ratio", "tok_ratio", "added_ttft", "added_p50", "added_p99")
CPU_NOTE = (
    "CPU ms/req: user+system CPU seconds of the watched process tree during a run / requests "
    "sent (clock ticks, so small runs are coarse)"
)


def _levels(_ctx: click.Context, _param: click.Parameter, value: str) -> list[int]:
    try:
        levels = [int(x) for x in value.split(",") if x.strip()]
    except ValueError:
        raise click.BadParameter(f"expected numbers like 1,5,10, got {value!r}") from None
    if not levels or min(levels) < 1:
        raise click.BadParameter("levels must be positive")
    return levels


def _pids(_ctx: click.Context, _param: click.Parameter, value: Sequence[str]) -> dict[str, int]:
    pids = {}
    for item in value:
        name, _, pid = item.partition("=")
        if not name or not pid.isdigit():
            raise click.BadParameter(f"expected NAME=PID, got {item!r}")
        pids[name] = int(pid)
    return pids


def local_url() -> str:
    """The local vLLama, where ``OLLAMA_HOST`` (or the default) says it listens."""
    host, port = parse_ollama_host(os.environ.get("OLLAMA_HOST", ""))
    host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


def listening_pid(url: str) -> int | None:
    """The local process listening on ``url``'s port, if it can be seen."""
    port = int(url.rsplit(":", 1)[1].split("/")[0]) if url.count(":") >= 2 else None
    if port is None:
        return None
    with contextlib.suppress(psutil.Error, OSError):
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
                return conn.pid
    return None


@dataclass
class LiveView:
    """What the live table shows: finished runs, and the one under way."""

    runs: list[Run] = field(default_factory=list)
    current: Progress | None = None
    shown: int = 24

    def render(self) -> RenderableType:
        table = RichTable(title="vllama bench (runs so far)", title_justify="left")
        for header in ("conc", "round", "target", "req/s", "tok/s", "TTFT p50 ms"):
            table.add_column(header, justify="left" if header == "target" else "right")
        for header in ("p99 ms", "tok≠asked", "errors"):
            table.add_column(header, justify="right")
        for done in self.runs[-self.shown :]:
            s = done.summary
            table.add_row(
                str(s.concurrency), str(done.round + 1), s.target, f"{s.req_per_s:.2f}",
                "—" if s.tokens_per_s is None else f"{s.tokens_per_s:.1f}",
                "—" if s.ttft_p50 is None else f"{s.ttft_p50 * 1000:.1f}",
                "—" if s.latency_p99 is None else f"{s.latency_p99 * 1000:.0f}",
                str(s.tokens_off), str(s.errors),
            )  # fmt: skip
        p = self.current
        if p is None:
            return table
        line = (
            f"running {p.target} at concurrency {p.concurrency}, round {p.round + 1}: "
            f"{p.done}/{p.planned} done, {p.errors} errors"
        )
        return Group(table, Text(line, style="dim"))


@dataclass
class Options:
    targets: list[Target]
    plan: Plan
    prompts: str
    baseline: str
    pids: dict[str, int]
    out: Path
    mode: str
    plots: bool


async def _measure(opts: Options, live: LiveView) -> tuple[SweepResult, list[dict[str, Any]]]:
    async with new_session() as session:
        described = [await describe(session, t) for t in opts.targets]
        targets = [t for t, _ in described]

        def started(progress: Progress) -> None:
            live.current = progress

        def finished(run: Run) -> None:
            live.runs.append(run)
            live.current = None

        result = await sweep(
            targets, opts.plan, session, pids=opts.pids, on_start=started, on_run=finished
        )
    return result, [settings for _, settings in described]


def _target_table(settings: Sequence[dict[str, Any]]) -> Table:
    rows = []
    for s in settings:
        reported = s["reported"]
        details = reported.get("details") if isinstance(reported.get("details"), dict) else {}
        quant = s["info"].get("quantization") or details.get("quantization_level") or None
        extra = ", ".join(f"{k}={v}" for k, v in s["info"].items() if k != "quantization")
        rows.append({
            "target": s["name"], "dialect": s["dialect"], "endpoint": s["endpoint"],
            "model": s["model"], "quantization": quant,
            "ignore_eos": "yes" if s["ignore_eos"] else "no",
            "version": reported.get("version"), "settings": extra or None,
        })  # fmt: skip
    keys = ("target", "dialect", "endpoint", "model", "quantization", "ignore_eos", "version")
    return Table("Targets", [Column(k, k) for k in (*keys, "settings")], rows)


def report_tables(
    result: SweepResult, settings: Sequence[dict[str, Any]], pids: Sequence[str]
) -> tuple[list[Table], list[dict[str, Any]]]:
    """The report's tables, and the comparison rows they (and the plots) are made of."""
    rows = comparison_rows(result.levels(), result.round_summaries())
    base = result.targets[0].name
    cpu = [Column(f"{name}_cpu", f"{name} CPU ms/req", "ms") for name in pids]
    tables = [
        _target_table(settings),
        Table("Throughput, and output tokens as each target reported them", THROUGHPUT, rows),
        Table("Latency: time to first token, between tokens, end to end", LATENCY, rows),
    ]
    if len(result.targets) > 1 or cpu:
        tables.append(
            Table(f"Against {base} (medians of per-round comparisons)", VERSUS + cpu, rows)
        )
    return tables, rows


def notes_for(opts: Options, result: SweepResult) -> list[str]:
    plan = opts.plan
    loop = (
        f"fixed rate: {plan.rate:g} requests/s, at most the level's concurrency in flight"
        if plan.rate
        else "closed loop: each of the level's workers sends its next request when one ends"
    )
    eos = [t.name for t in result.targets if t.ignore_eos and t.dialect == "openai"]
    requests = f"{plan.requests}" if plan.requests else "4 x concurrency (at least 4)"
    return [
        f"{loop}; {requests} requests per target, level and round"
        + (f", or {plan.duration:g} s" if plan.duration else ""),
        f"{plan.rounds} round(s) per level, targets interleaved (order reversed every other "
        f"round); figures are medians over rounds; comparisons against {opts.baseline} are "
        "taken round by round, then the median",
        f"prompts: {opts.prompts} ({len(plan.prompts)} chat prompts, round-robin), temperature 0, "
        f"max_tokens {plan.max_tokens}; {plan.warmup} warm-up request(s) per target discarded",
        "output tokens are each target's own count (Ollama eval_count, OpenAI "
        "usage.completion_tokens), never counted from chunks; tok≠asked counts answers of "
        f"another length; ignore_eos sent to: {', '.join(eos) or 'none'} (Ollama's API has no "
        "such option, so its answers may stop early)",
        "TTFT: request sent -> first chunk with content; ITL: gaps between content chunks; "
        "throughput: successful requests (or their tokens) per wall-clock second of the run",
        *([CPU_NOTE] if opts.pids else []),
        *_reconnect_note(result),
    ]


def _reconnect_note(result: SweepResult) -> list[str]:
    counts = {t.name: 0 for t in result.targets}
    for done in result.runs:
        counts[done.summary.target] += sum(s.reconnects for s in done.result.samples)
    if not any(counts.values()):
        return []
    listed = ", ".join(f"{name} {n}" for name, n in counts.items())
    return [
        "requests sent again on a new connection because the server had closed the kept-alive "
        f"one before answering (the time it took counts): {listed}"
    ]


def execute(opts: Options, console: Console) -> ExitStatus:
    live = LiveView()
    with Live(console=console, get_renderable=live.render, refresh_per_second=4, transient=False):
        result, settings = run(_measure(opts, live))
    console.print()
    tables, rows = report_tables(result, settings, list(opts.pids))
    print_tables(Console(width=None if sys.stdout.isatty() else 200), tables[1:])
    record = {
        "plan": {**asdict(opts.plan), "prompts": opts.prompts},
        "baseline": opts.baseline,
        "targets": settings,
        "watched_pids": opts.pids,
    }
    files = write_report(
        opts.out, opts.mode, title=f"vllama bench ({opts.mode})", settings=record, tables=tables,
        notes=notes_for(opts, result), runs=result.runs, plot_rows=rows if opts.plots else None,
    )  # fmt: skip
    console.print(f"wrote {files.json}, {files.markdown}")
    for path in files.plots:
        console.print(f"wrote {path}")
    off = [r for r in rows if r["tokens_off"] and r.get("max_tokens")]
    failed = [r for r in rows if r["ok"] == 0]
    for r in off:
        console.print(
            f"[yellow]{r['target']} at {r['concurrency']}: {r['tokens_off']} answer(s) not "
            f"{r['max_tokens']} tokens long[/yellow]"
        )
    for r in failed:
        console.print(f"[red]{r['target']} at {r['concurrency']}: every request failed[/red]")
    return ExitStatus.ERROR if failed else ExitStatus.OK


@click.command("bench")
@click.option(
    "--target",
    "-t",
    "target_specs",
    multiple=True,
    metavar="NAME=URL,dialect=D[,key=K][,model=M]",
    help="A target; repeat for several (the first is the baseline unless --baseline). "
    "Default: the local vLLama's Ollama and OpenAI APIs.",
)
@click.option("--model", "-m", help="Model for targets without model=; default: the first listed.")
@click.option(
    "--prompts",
    default="mixed",
    show_default=True,
    help="Built-in set (short, long, mixed) or a JSONL file of {messages} or {prompt} lines.",
)
@click.option("--max-tokens", type=click.IntRange(1), default=64, show_default=True)
@click.option(
    "--concurrency",
    "-c",
    "levels",
    default=DEFAULT_LEVELS,
    show_default=True,
    callback=_levels,
    help="Concurrency levels (closed loop) or in-flight caps (--rate).",
)
@click.option(
    "--requests",
    "-n",
    type=click.IntRange(1),
    help="Per target, level and round.  [default: 4 x concurrency, at least 4]",
)
@click.option(
    "--duration", type=click.FloatRange(min=0, min_open=True), help="Seconds per run, at most."
)
@click.option(
    "--rate",
    type=click.FloatRange(min=0, min_open=True),
    help="Fixed request rate (requests/s, open loop) instead of a closed loop.",
)
@click.option(
    "--warmup",
    type=click.IntRange(0),
    default=4,
    show_default=True,
    help="Discarded requests per target before the first level.",
)
@click.option(
    "--rounds",
    type=click.IntRange(1),
    default=3,
    show_default=True,
    help="Interleaved rounds per level; figures are medians.",
)
@click.option("--baseline", help="Target the others are compared with (default: the first).")
@click.option(
    "--overhead",
    is_flag=True,
    help="Measure what vLLama adds: --engine direct vs --gateway's Ollama and OpenAI APIs.",
)
@click.option("--engine", "engine_url", metavar="URL", help="--overhead: the engine's own URL.")
@click.option("--engine-key", envvar="VLLAMA_ENGINE_API_KEY", help="--overhead: its API key.")
@click.option(
    "--gateway",
    "gateway_url",
    metavar="URL",
    help="vLLama's URL (default: from OLLAMA_HOST, else 127.0.0.1:11434).",
)
@click.option(
    "--watch",
    "pids",
    multiple=True,
    callback=_pids,
    metavar="NAME=PID",
    help="Charge this process tree's CPU time per request (e.g. gateway=1234).",
)
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=Path("bench-results"),
    show_default=True,
    help="Folder for the JSON, Markdown and PNG files.",
)
@click.option("--no-plots", is_flag=True, help="Skip the PNG plots.")
def bench(**kw: Any) -> None:
    """Benchmark chat serving on one or more targets, interleaved, with reports."""
    console = Console(stderr=True)
    try:
        opts = options(**kw)
    except (TargetError, PromptError) as exc:
        raise click.UsageError(str(exc)) from exc
    try:
        status = execute(opts, console)
    except TargetError as exc:
        raise click.ClickException(str(exc)) from exc
    sys.exit(int(status))


def options(**kw: Any) -> Options:
    gateway = (kw["gateway_url"] or local_url()).rstrip("/")
    targets: list[Target] = []
    pids = dict(kw["pids"])
    mode = "bench"
    if kw["overhead"]:
        if not kw["engine_url"]:
            raise TargetError("--overhead needs --engine URL (and --engine-key if it has one)")
        mode = "overhead"
        key = kw["engine_key"]
        targets += [
            Target("direct", kw["engine_url"].rstrip("/"), "openai", True, key, ""),
            Target("vllama /api", gateway, "ollama", True, None, ""),
            Target("vllama /v1", gateway, "openai", True, None, ""),
        ]
        if "gateway" not in pids and (pid := listening_pid(gateway)) is not None:
            pids["gateway"] = pid
    targets += [parse_target(spec) for spec in kw["target_specs"]]
    if not targets:
        targets = [
            Target("vllama /api", gateway, "ollama", True, None, ""),
            Target("vllama /v1", gateway, "openai", True, None, ""),
        ]
    if kw["model"]:
        targets = [t if t.model else replace(t, model=kw["model"]) for t in targets]
    names = [t.name for t in targets]
    if len(set(names)) != len(names):
        raise TargetError(f"target names must differ: {', '.join(names)}")
    baseline = kw["baseline"] or names[0]
    if baseline not in names:
        raise TargetError(f"--baseline {baseline}: no such target ({', '.join(names)})")
    targets.sort(key=lambda t: t.name != baseline)
    plan = Plan(
        concurrency=kw["levels"], prompts=load(kw["prompts"]), max_tokens=kw["max_tokens"],
        rounds=kw["rounds"], warmup=kw["warmup"], requests=kw["requests"],
        duration=kw["duration"], rate=kw["rate"],
    )  # fmt: skip
    return Options(
        targets, plan, kw["prompts"], baseline, pids, kw["out"], mode, not kw["no_plots"]
    )
