"""`vllama bench` against the real embedded engine, through both dialects:
the report's numbers agree with each other and with what was asked."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import orjson
import pytest

from tests.conftest import MODEL, Served
from tests.procs import VLLAMA

pytestmark = pytest.mark.engine

MAX_TOKENS = 16


def test_bench_both_dialects_at_two_levels(served: Served, tmp_path: Path) -> None:
    argv = [
        str(VLLAMA), "bench", "--out", str(tmp_path),
        "-t", f"api={served.url},dialect=ollama",
        "-t", f"v1={served.url}/v1,dialect=openai",
        *shlex.split(f"-c 1,2 -n 2 --rounds 1 --warmup 1 --max-tokens {MAX_TOKENS}"),
        "--prompts", "short",
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr
    (path,) = tmp_path.glob("*.json")
    record = orjson.loads(path.read_bytes())

    assert [t["model"] for t in record["settings"]["targets"]] == [MODEL, MODEL]
    runs = {(r["summary"]["target"], r["summary"]["concurrency"]): r for r in record["runs"]}
    assert sorted(runs) == [("api", 1), ("api", 2), ("v1", 1), ("v1", 2)]
    for (target, _), run in runs.items():
        summary, samples = run["summary"], run["result"]["samples"]
        tokens = [s["output_tokens"] for s in samples]
        assert (summary["sent"], summary["ok"], summary["errors"]) == (2, 2, 0)
        assert None not in tokens  # each answer's count comes from the target's usage report
        if target == "v1":  # ignore_eos: exactly what was asked
            assert tokens == [MAX_TOKENS] * 2
        assert all(1 <= n <= MAX_TOKENS for n in tokens)
        assert summary["tokens_off"] == sum(n != MAX_TOKENS for n in tokens)
        assert summary["tokens_per_s"] * summary["wall"] == pytest.approx(sum(tokens))
        assert summary["tokens_per_request"] == pytest.approx(sum(tokens) / 2)
        for s in samples:
            assert 0 < s["ttft"] < s["end"] - s["start"]
            assert len(s["gaps"]) >= 1
    throughput = next(t for t in record["tables"] if t["title"].startswith("Throughput"))
    for row in throughput["rows"]:
        if row["target"] == "v1":
            assert (row["tokens_off"], row["tokens_per_request"]) == (0, MAX_TOKENS)
    for name in record["plots"]:
        assert (tmp_path / name).stat().st_size > 0
