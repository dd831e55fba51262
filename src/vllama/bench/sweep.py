"""A sweep: every target at every concurrency level, in interleaved rounds.

Per level, each round runs every target once, the order reversed every other
time (A B, B A, ...), so a machine that gets busier or quieter during a level
touches every target alike. Before the first level each target gets a few
discarded warm-up requests (connections, caches, code paths). Each run yields a
:class:`Run` (its samples, summary and the CPU time the watched processes spent
per request); per target and level the figures reported are medians over the
rounds, and comparisons are taken round by round (:mod:`vllama.bench.stats`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import aiohttp
import psutil

from vllama.bench.loadgen import LevelResult, Sample, Target, run_level
from vllama.bench.prompts import Prompt
from vllama.bench.stats import Summary, median, median_summary, summarize


@dataclass(frozen=True)
class Plan:
    """What each target is asked to do."""

    concurrency: Sequence[int]
    prompts: Sequence[str | Prompt]
    max_tokens: int
    rounds: int = 1
    warmup: int = 0  #: discarded requests per target before the first level
    requests: int | None = None  #: per target, level and round; None: :meth:`requests_at`
    duration: float | None = None  #: seconds per run, at most
    rate: float | None = None  #: fixed request rate (req/s); None: closed loop
    #: before each run, one discarded burst of ``c`` requests to open ``c``
    #: connections (for fast fake upstreams, where connection set-up would dominate)
    connect_burst: bool = False

    def requests_at(self, concurrency: int) -> int:
        return self.requests or max(4, 4 * concurrency)


@dataclass
class Run:
    """One target at one level in one round."""

    kind: str
    round: int
    summary: Summary
    result: LevelResult
    cpu_s_per_request: dict[str, float] = field(default_factory=dict)


@dataclass
class Progress:
    """What a live display needs to know while a run is going."""

    target: str
    concurrency: int
    round: int
    planned: int
    done: int = 0
    errors: int = 0

    def count(self, sample: Sample) -> None:
        self.done += 1
        self.errors += sample.error is not None


@dataclass
class SweepResult:
    targets: list[Target]
    plan: Plan
    runs: list[Run] = field(default_factory=list)

    def rounds(self, concurrency: int, target: str) -> list[Summary]:
        """The summaries of ``target`` at ``concurrency``, in round order."""
        found = [r for r in self.runs if r.summary.concurrency == concurrency]
        return [
            r.summary for r in sorted(found, key=lambda r: r.round) if r.summary.target == target
        ]

    def levels(self) -> dict[int, list[tuple[Summary, dict[str, float | None]]]]:
        """Per level, per target (in target order): the median summary over
        rounds and the median CPU seconds per request of each watched process."""
        out: dict[int, list[tuple[Summary, dict[str, float | None]]]] = {}
        for c in self.plan.concurrency:
            entries = []
            for t in self.targets:
                runs = [
                    r
                    for r in self.runs
                    if r.summary.concurrency == c and r.summary.target == t.name
                ]
                if not runs:
                    continue
                keys = runs[0].cpu_s_per_request
                cpu = {k: median([r.cpu_s_per_request.get(k) for r in runs]) for k in keys}
                entries.append((median_summary([r.summary for r in runs]), cpu))
            if entries:
                out[c] = entries
        return out

    def round_summaries(self) -> dict[int, list[list[Summary]]]:
        """Per level, per target (in target order): its summaries in round order."""
        return {c: [self.rounds(c, t.name) for t in self.targets] for c in self.levels()}


def tree_cpu(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and every live descendant."""
    total = 0.0
    with contextlib.suppress(psutil.NoSuchProcess):
        root = psutil.Process(pid)
        for proc in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                times = proc.cpu_times()
                total += times.user + times.system
    return total


async def sweep(
    targets: Sequence[Target],
    plan: Plan,
    session: aiohttp.ClientSession,
    *,
    kind: str = "stream",
    pids: Mapping[str, int] | None = None,
    on_start: Callable[[Progress], None] | None = None,
    on_run: Callable[[Run], None] | None = None,
) -> SweepResult:
    """Measure every target at every level of ``plan``; ``pids`` names processes
    whose CPU time (with their children's) is charged per request. ``on_start``
    gets a :class:`Progress` that counts the run's samples as they complete;
    ``on_run`` gets each finished run."""
    if not targets:
        raise ValueError("no targets")
    if len({t.name for t in targets}) != len(targets):
        raise ValueError("target names must differ")
    result = SweepResult(list(targets), plan)
    watched = dict(pids or {})
    for t in targets:
        if plan.warmup:
            await run_level(t, min(4, plan.warmup), plan.warmup, plan.prompts, plan.max_tokens,
                            session=session)  # fmt: skip
    for li, c in enumerate(plan.concurrency):
        for r in range(plan.rounds):
            for t in targets if (li + r) % 2 == 0 else list(reversed(targets)):
                n = plan.requests_at(c)
                progress = Progress(t.name, c, r, n)
                if on_start is not None:
                    on_start(progress)
                if plan.connect_burst:
                    await run_level(t, c, c, plan.prompts, plan.max_tokens, session=session)
                before = {name: tree_cpu(pid) for name, pid in watched.items()}
                level = await run_level(
                    t, c, n, plan.prompts, plan.max_tokens,
                    duration=plan.duration, rate=plan.rate, session=session,
                    on_sample=progress.count,
                )  # fmt: skip
                sent = max(1, len(level.samples))
                cpu = {f"{k}_cpu": (tree_cpu(p) - before[k]) / sent for k, p in watched.items()}
                run = Run(kind, r, summarize(level), level, cpu)
                result.runs.append(run)
                if on_run is not None:
                    on_run(run)
    return result
