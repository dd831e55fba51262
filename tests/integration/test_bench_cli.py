"""`vllama bench` end to end against the fake engine, direct and through a real
`vllama serve --engine-url` in front of it: interleaving, token checks, reports."""

from __future__ import annotations

import asyncio
import itertools
import shlex
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.procs import VLLAMA, attached_stack, free_port
from vllama.bench.loadgen import Target, new_session, run, run_level

MODEL = "smollm2:135m"
KEY = "engine-key"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(engine URL, gateway URL): the fake engine and vLLama attached to it."""
    home = tmp_path_factory.mktemp("bench-home")
    with attached_stack(home, "--token-delay", "0.002", model=MODEL) as urls:
        yield urls


def bench(out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [str(VLLAMA), "bench", "--out", str(out), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)


def record_of(out: Path) -> dict[str, Any]:
    (path,) = out.glob("*.json")
    record: dict[str, Any] = orjson.loads(path.read_bytes())
    return record


def test_three_targets_interleaved_with_consistent_reports(
    stack: tuple[str, str], tmp_path: Path
) -> None:
    engine, gateway = stack
    targets = [
        f"direct={engine}/v1,dialect=openai,key={KEY},quantization=bf16",
        f"vllama-api={gateway},dialect=ollama",
        f"vllama-v1={gateway}/v1,dialect=openai",
    ]
    flags = shlex.split("-c 1,3 -n 6 --rounds 2 --max-tokens 8 --warmup 2 --prompts short")
    done = bench(tmp_path, *[f for t in targets for f in ("-t", t)], *flags)
    assert done.returncode == 0, done.stderr
    record = record_of(tmp_path)

    order = [
        (r["summary"]["concurrency"], r["round"], r["summary"]["target"]) for r in record["runs"]
    ]
    names = ["direct", "vllama-api", "vllama-v1"]
    back = names[::-1]
    expected = [(1, 0, n) for n in names] + [(1, 1, n) for n in back]
    expected += [(3, 0, n) for n in back] + [(3, 1, n) for n in names]
    assert order == expected  # A B C, C B A, then the next level starts where the last ended

    for entry in record["runs"]:
        summary, samples = entry["summary"], entry["result"]["samples"]
        assert (summary["sent"], summary["errors"], len(samples)) == (6, 0, 6)
        assert [s["output_tokens"] for s in samples] == [8] * 6  # as reported, = as asked
        assert summary["tokens_per_s"] * summary["wall"] == pytest.approx(6 * 8)
        assert all(
            s["ttft"] is not None and 0 < s["ttft"] <= s["end"] - s["start"] for s in samples
        )
    settings = {t["name"]: t for t in record["settings"]["targets"]}
    assert settings["direct"]["info"] == {"quantization": "bf16"}
    assert settings["direct"]["reported"]["model"]["id"] == MODEL
    assert settings["vllama-api"]["model"] == MODEL  # found in /api/tags
    assert (settings["direct"]["ignore_eos"], settings["vllama-api"]["ignore_eos"]) == (True, False)
    assert KEY not in (tmp_path / record["plots"][0]).with_suffix("").name
    assert KEY.encode() not in next(tmp_path.glob("*.json")).read_bytes()

    versus = next(t for t in record["tables"] if t["title"].startswith("Against direct"))
    for row in versus["rows"]:
        assert row["target"] == "direct" or len(row["tok_ratio_rounds"]) == 2
        assert row["tokens_off"] == 0
    assert sorted(p.name for p in tmp_path.glob("*.png")) == sorted(record["plots"])
    markdown = next(tmp_path.glob("*.md")).read_text()
    assert "### Targets" in markdown
    assert "| 3 | vllama-api | 12 | 0 |" in markdown  # sent: both rounds


def test_fixed_rate_spaces_the_starts(stack: tuple[str, str]) -> None:
    engine, _ = stack
    target = Target("direct", engine, "openai", True, KEY, MODEL)

    async def measure() -> list[float]:
        async with new_session() as session:
            level = await run_level(target, 4, 6, ["hi"], 4, rate=20.0, session=session)
        assert level.rate == 20.0
        return sorted(s.start for s in level.samples)

    starts = run(measure())
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert min(gaps) >= 0.04  # 1/20 s apart, give or take the timer
    assert starts[-1] - starts[0] == pytest.approx(0.25, abs=0.05)


def test_overhead_mode_and_bad_targets(stack: tuple[str, str], tmp_path: Path) -> None:
    engine, gateway = stack
    flags = f"--overhead --engine {engine} --engine-key {KEY} --gateway {gateway}".split()
    start = time.monotonic()
    done = bench(tmp_path, *flags, *shlex.split("-c 2 -n 2 --rounds 1 --max-tokens 4 --no-plots"))
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - start < 60
    record = record_of(tmp_path)
    assert record["mode"] == "overhead"
    assert [t["name"] for t in record["settings"]["targets"]] == [
        "direct",
        "vllama /api",
        "vllama /v1",
    ]
    assert record["plots"] == []
    assert "gateway" in record["settings"]["watched_pids"]  # found by its listening port
    bad = bench(tmp_path, "-t", f"x={gateway},dialect=grpc")
    assert bad.returncode == 2
    assert "dialect must be ollama or openai" in bad.stderr
    down = bench(tmp_path, "-t", f"gone=http://127.0.0.1:{free_port()},dialect=openai")
    assert down.returncode == 1
    assert "no model given" in down.stderr


SSE = (
    b'data: {"choices":[{"index":0,"delta":{"content":"x"}}]}\n\n'
    b'data: {"choices":[],"usage":{"completion_tokens":1}}\n\ndata: [DONE]\n\n'
)


async def test_a_connection_closed_after_one_answer_is_replaced_not_an_error() -> None:
    """Like llama.cpp's server: one answer per connection, then a later request on
    it is dropped unanswered. The load generator sends it again on a new one."""
    answered = 0

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal answered
        for first in (True, False):
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            await reader.readexactly(length)
            if not first:
                break  # the second request on this connection: hang up, unanswered
            answered += 1
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                b"content-length: %d\r\nkeep-alive: timeout=5\r\n\r\n%s" % (len(SSE), SSE)
            )
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    target = Target("closing", f"http://127.0.0.1:{port}", "openai", True, None, "m")
    try:
        async with new_session() as session:
            level = await run_level(target, 1, 4, ["hi"], 1, session=session)
    finally:
        server.close()
        await server.wait_closed()
    assert [s.error for s in level.samples] == [None] * 4
    assert [s.output_tokens for s in level.samples] == [1] * 4
    assert answered == 4
    assert sum(s.reconnects for s in level.samples) >= 1
