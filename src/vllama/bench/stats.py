"""Figures from samples: percentiles, throughput, medians over rounds, ratios.

Pure functions over :mod:`vllama.bench.loadgen`'s data; no clocks, no I/O.
Latency, TTFT and inter-token figures are over successful requests only;
throughput is successful requests (or their reported output tokens) per
wall-clock second of the level. Output tokens are the target's own count,
checked against the count asked for (``tokens_off``).

Targets are measured in interleaved rounds, so a comparison is taken round by
round (target and baseline in round 1, in round 2, ...) and then the median of
those per-round ratios is reported: a machine that slows down between rounds
moves both sides of each ratio alike.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, replace

from vllama.bench.loadgen import LevelResult


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0..100) with linear interpolation between the
    closest ranks (numpy's default); None for no values."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} outside 0..100")
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median(values: Sequence[float | None]) -> float | None:
    """Median of the values that are not None; None when there are none."""
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def difference(a: float | None, b: float | None) -> float | None:
    """``a - b``, or None if either is missing."""
    return None if a is None or b is None else a - b


@dataclass(frozen=True)
class Summary:
    """One target at one level (or the median of several rounds of it)."""

    target: str
    concurrency: int
    sent: int
    ok: int
    errors: int
    wall: float
    req_per_s: float
    tokens_per_s: float | None  #: None when no request reported its tokens
    tokens_per_request: float | None
    latency_p50: float | None
    latency_p95: float | None
    latency_p99: float | None
    ttft_p50: float | None
    ttft_p95: float | None
    ttft_p99: float | None
    itl_p50: float | None
    itl_p95: float | None
    itl_p99: float | None
    max_tokens: int = 0  #: output tokens asked for per request
    tokens_unreported: int = 0  #: successful requests whose target reported no token count
    tokens_off: int = 0  #: successful requests whose reported count is not ``max_tokens``


def summarize(result: LevelResult) -> Summary:
    ok = [s for s in result.samples if s.error is None]
    latencies = [s.latency for s in ok]
    ttfts = [s.ttft for s in ok if s.ttft is not None]
    gaps = [g for s in ok for g in s.gaps]
    counted = [s.output_tokens for s in ok if s.output_tokens is not None]
    wall = result.wall
    return Summary(
        target=result.target.name,
        concurrency=result.concurrency,
        sent=len(result.samples),
        ok=len(ok),
        errors=len(result.samples) - len(ok),
        wall=wall,
        req_per_s=len(ok) / wall if wall > 0 else 0.0,
        tokens_per_s=sum(counted) / wall if counted and wall > 0 else None,
        tokens_per_request=sum(counted) / len(counted) if counted else None,
        latency_p50=percentile(latencies, 50),
        latency_p95=percentile(latencies, 95),
        latency_p99=percentile(latencies, 99),
        ttft_p50=percentile(ttfts, 50),
        ttft_p95=percentile(ttfts, 95),
        ttft_p99=percentile(ttfts, 99),
        itl_p50=percentile(gaps, 50),
        itl_p95=percentile(gaps, 95),
        itl_p99=percentile(gaps, 99),
        max_tokens=result.max_tokens,
        tokens_unreported=len(ok) - len(counted),
        tokens_off=sum(1 for n in counted if n != result.max_tokens),
    )


def median_summary(rounds: Sequence[Summary]) -> Summary:
    """Field-wise median over rounds of one target at one level; counts are summed."""
    if not rounds:
        raise ValueError("no rounds")
    first = rounds[0]
    if any(r.target != first.target or r.concurrency != first.concurrency for r in rounds):
        raise ValueError("rounds of different targets or levels")
    if any(r.max_tokens != first.max_tokens for r in rounds):
        raise ValueError("rounds asked for different token counts")
    changes: dict[str, object] = {}
    for f in fields(Summary):
        if f.name in _SAME:
            continue
        values = [getattr(r, f.name) for r in rounds]
        changes[f.name] = sum(values) if f.name in _SUMMED else median(values)
    return replace(first, **changes)  # type: ignore[arg-type]


_SAME = ("target", "concurrency", "max_tokens")
_SUMMED = ("sent", "ok", "errors", "wall", "tokens_unreported", "tokens_off")


def _paired(
    rounds: Sequence[Summary],
    base: Sequence[Summary],
    metric: str,
    combine: Callable[[float | None, float | None], float | None],
) -> list[float | None]:
    if len(rounds) != len(base):
        raise ValueError(f"{len(rounds)} rounds against {len(base)} of the baseline")
    if any(r.concurrency != b.concurrency for r, b in zip(rounds, base, strict=True)):
        raise ValueError("rounds of different levels")
    if metric in _SAME or metric not in {f.name for f in fields(Summary)}:
        raise ValueError(f"no figure {metric!r} in a summary")
    return [
        combine(getattr(r, metric), getattr(b, metric)) for r, b in zip(rounds, base, strict=True)
    ]


def round_ratios(
    rounds: Sequence[Summary], base: Sequence[Summary], metric: str
) -> list[float | None]:
    """``metric`` of a target over the baseline's, round by round (round i with round i)."""
    return _paired(rounds, base, metric, ratio)


def round_differences(
    rounds: Sequence[Summary], base: Sequence[Summary], metric: str
) -> list[float | None]:
    """``metric`` of a target minus the baseline's, round by round."""
    return _paired(rounds, base, metric, difference)
