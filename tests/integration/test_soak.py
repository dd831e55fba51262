"""The soak script, short: a steady mix of all traffic with nothing unexpected."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.procs import ROOT

pytestmark = pytest.mark.slow


def test_short_soak_is_clean() -> None:
    run = subprocess.run(
        [
            str(ROOT / "scripts" / "soak"),
            "--duration",
            "15",
            "--concurrency",
            "8",
            "--warmup",
            "5",
            "--report-every",
            "5",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    summary = json.loads(run.stdout[run.stdout.index("{") :])
    assert summary["unexpected"] == 0
    assert summary["requests"] > 300
    kinds = {key.split(":")[0] for key in summary["counts"]}
    assert kinds == {
        "ollama_chat_stream",
        "ollama_generate",
        "openai_chat_stream",
        "openai_completion",
        "vanish",
        "expected_error",
    }
    assert summary["rss_growth"] < 0.05
