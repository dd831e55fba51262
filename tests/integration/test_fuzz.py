"""Property-based fuzzing of the whole gateway from its own OpenAPI description.

schemathesis generates valid and invalid requests for every route (more than
5,000 in all) against `vllama serve` managing the fake engine, and checks
each answer: never a 5xx, never a hang (a per-request timeout), and every
error body in its route's dialect (the description's error schemas).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.procs import ROOT, managed_fake, wait_http

pytestmark = pytest.mark.slow

SCHEMATHESIS = ROOT / ".venv" / "bin" / "schemathesis"


def test_fuzzed_requests_get_clean_answers(tmp_path: Path) -> None:
    proc, url = managed_fake(tmp_path, "", VLLAMA_LOG_LEVEL="warning")
    try:
        wait_http(url + "/ready", timeout=30, proc=proc.popen)
        run = subprocess.run(
            [
                str(SCHEMATHESIS),
                "run",
                url + "/openapi.json",
                "--checks",
                "not_a_server_error,response_schema_conformance",
                "--max-examples",
                "1000",
                "--request-timeout",
                "20",
                "--workers",
                "2",
                "--seed",
                "20261123",
            ],
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
            cwd=tmp_path,
        )
        report = run.stdout + run.stderr
        assert run.returncode == 0, report[-6000:]
        counted = re.search(r"(\d+) generated, (\d+) passed", report)
        assert counted is not None, report[-3000:]
        generated, passed = int(counted.group(1)), int(counted.group(2))
        assert generated >= 5000, report[-3000:]
        assert passed == generated
        assert httpx.get(url + "/health").status_code == 200
        assert "Traceback" not in proc.output, proc.output[-6000:]
    finally:
        proc.stop()
        proc.kill_group()
