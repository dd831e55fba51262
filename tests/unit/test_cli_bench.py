"""`vllama bench`'s options: targets, baseline, overhead mode, the live table."""

from __future__ import annotations

from typing import Any

import pytest
from rich.console import Console

from vllama.bench.loadgen import LevelResult, Sample, Target
from vllama.bench.stats import summarize
from vllama.bench.sweep import Progress, Run
from vllama.bench.targets import TargetError
from vllama.cli.bench import LiveView, local_url, options


def opts(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "target_specs": (), "model": None, "prompts": "short", "max_tokens": 8, "levels": [1, 2],
        "requests": None, "duration": None, "rate": None, "warmup": 0, "rounds": 1,
        "baseline": None, "overhead": False, "engine_url": None, "engine_key": None,
        "gateway_url": "http://g:1", "pids": {}, "out": "o", "no_plots": True,
    }  # fmt: skip
    return {**base, **kw}


def test_default_targets_are_the_local_vllamas_two_dialects(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OLLAMA_HOST", raising=False)
    o = options(**opts(gateway_url=None, model="m"))
    assert [(t.name, t.url, t.dialect, t.model) for t in o.targets] == [
        ("vllama /api", "http://127.0.0.1:11434", "ollama", "m"),
        ("vllama /v1", "http://127.0.0.1:11434", "openai", "m"),
    ]
    monkeypatch.setenv("OLLAMA_HOST", "0.0.0.0:8080")
    assert local_url() == "http://127.0.0.1:8080"


def test_baseline_goes_first_and_names_must_differ() -> None:
    specs = ("a=http://a,dialect=openai,model=x", "b=http://b,dialect=ollama")
    o = options(**opts(target_specs=specs, baseline="b", model="m"))
    assert [(t.name, t.model) for t in o.targets] == [("b", "m"), ("a", "x")]
    assert o.plan.requests_at(2) == 8
    with pytest.raises(TargetError, match="no such target"):
        options(**opts(target_specs=specs, baseline="c"))
    with pytest.raises(TargetError, match="must differ"):
        options(**opts(target_specs=(specs[0], specs[0])))


def test_overhead_mode_needs_the_engine_and_compares_with_it() -> None:
    with pytest.raises(TargetError, match="--engine"):
        options(**opts(overhead=True))
    o = options(**opts(overhead=True, engine_url="http://e:8000/", engine_key="k"))
    assert o.mode == "overhead"
    assert [(t.name, t.url, t.api_key) for t in o.targets] == [
        ("direct", "http://e:8000", "k"),
        ("vllama /api", "http://g:1", None),
        ("vllama /v1", "http://g:1", None),
    ]


def test_live_view_shows_runs_and_the_one_under_way() -> None:
    target = Target("a", "http://a", "openai", True, None, "m")
    level = LevelResult(target, 2, 1, 8, 1.0, [Sample(0.0, 0.5, 0.1, [], 8)])
    view = LiveView(runs=[Run("stream", 0, summarize(level), level)])
    progress = Progress("b", 5, 1, 20)
    progress.count(Sample(0.0, 1.0, None, [], None, error="HTTP 500"))
    view.current = progress
    console = Console(width=120, record=True)
    console.print(view.render())
    text = console.export_text()
    assert "running b at concurrency 5, round 2: 1/20 done, 1 errors" in text
    assert "100.0" in text  # TTFT p50 ms of the finished run
