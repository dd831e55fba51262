"""Benchmark figures and the load generator's stream parsing, on byte transcripts."""

from __future__ import annotations

import math
from pathlib import Path

import orjson
import pytest

from vllama.bench.loadgen import (
    LevelResult,
    Recorder,
    Sample,
    Target,
    openai_chunk,
    request_body,
)
from vllama.bench.report import (
    Column,
    Table,
    columns,
    comparison_rows,
    format_value,
    markdown_table,
    write_results,
)
from vllama.bench.stats import (
    difference,
    median,
    median_summary,
    percentile,
    ratio,
    summarize,
)

OPENAI = Target("direct", "http://e:1/", "openai", True, "k", "m")
OLLAMA = Target("gateway /api", "http://g:2", "ollama", True, None, "m")


# -- stats ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("values", "q", "expected"),
    [
        ([5.0], 50, 5.0),
        ([5.0], 99, 5.0),
        ([1.0, 2.0, 3.0, 4.0], 50, 2.5),
        ([4.0, 1.0, 3.0, 2.0], 0, 1.0),
        ([4.0, 1.0, 3.0, 2.0], 100, 4.0),
        ([float(i) for i in range(1, 101)], 99, 99.01),  # numpy.percentile(range(1, 101), 99)
        ([float(i) for i in range(1, 101)], 95, 95.05),
        ([], 50, None),
    ],
)
def test_percentile_interpolates_like_numpy(values: list[float], q: float, expected: float) -> None:
    got = percentile(values, q)
    assert got == expected if expected is None else got == pytest.approx(expected)


def test_percentile_rejects_out_of_range() -> None:
    with pytest.raises(ValueError, match="outside"):
        percentile([1.0], 101)


def test_median_ratio_difference_tolerate_missing_values() -> None:
    assert median([3.0, None, 1.0, 2.0]) == 2.0
    assert median([None]) is None
    assert ratio(1.0, 4.0) == 0.25
    assert ratio(1.0, 0.0) is None
    assert ratio(None, 1.0) is None
    assert difference(0.003, 0.001) == pytest.approx(0.002)
    assert difference(None, 0.001) is None


def sample(start: float, end: float, ttft: float | None = None, **kw: object) -> Sample:
    gaps = kw.pop("gaps", [])
    tokens = kw.pop("tokens", 10)
    error = kw.pop("error", None)
    return Sample(start, end, ttft, gaps, tokens, error)  # type: ignore[arg-type]


def level(*samples: Sample, wall: float = 2.0, target: Target = OPENAI) -> LevelResult:
    return LevelResult(target, 2, len(samples), 10, wall, list(samples))


def test_summarize_counts_only_successes_in_figures() -> None:
    result = level(
        sample(0.0, 0.1, 0.01, gaps=[0.01, 0.03]),
        sample(0.0, 0.3, 0.03, gaps=[0.02]),
        sample(0.1, 0.2, tokens=None),  # succeeded without a usage report
        sample(0.2, 9.0, error="HTTP 503: busy", tokens=None),
    )
    s = summarize(result)
    assert (s.sent, s.ok, s.errors) == (4, 3, 1)
    assert s.req_per_s == pytest.approx(1.5)  # 3 ok in 2 s
    assert s.tokens_per_s == pytest.approx(10.0)  # 20 reported tokens in 2 s
    assert s.tokens_per_request == pytest.approx(10.0)
    assert s.latency_p50 == pytest.approx(0.1)
    assert s.ttft_p50 == pytest.approx(0.02)
    assert s.itl_p50 == pytest.approx(0.02)
    assert s.itl_p99 == pytest.approx(0.0298)


def test_summarize_without_reported_tokens_or_samples() -> None:
    s = summarize(level(sample(0, 1, tokens=None)))
    assert (s.tokens_per_s, s.tokens_per_request) == (None, None)
    empty = summarize(level(wall=0.0))
    assert (empty.sent, empty.req_per_s, empty.latency_p50) == (0, 0.0, None)


def test_median_summary_takes_medians_and_sums_counts() -> None:
    rounds = [summarize(level(*[sample(0, x)] * 4, wall=w)) for x, w in ((1, 1), (3, 2), (2, 4))]
    m = median_summary(rounds)
    assert m.latency_p50 == 2.0
    assert m.req_per_s == 2.0  # medians of 4, 2, 1
    assert (m.sent, m.wall) == (12, 7)
    with pytest.raises(ValueError, match="different"):
        median_summary([rounds[0], summarize(level(sample(0, 1), target=OLLAMA))])


# -- parsing -------------------------------------------------------------------------------
SSE_TRANSCRIPT = [
    (1.00, b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n'),
    (1.05, b'data: {"choices":[{"index":0,"delta":{"content":"He"}}]}\n\ndata: {"cho'),
    (1.07, b'ices":[{"index":0,"delta":{"content":"llo"}}]}\r\n\r\n'),
    (1.10, b'data: {"choices":[{"index":0,"delta":{"content":"!"},"finish_reason":"length"}]}'),
    (1.11, b'\n\n: keep-alive\n\ndata: {"choices":[],"usage":{"prompt_tokens":5,'),
    (1.12, b'"completion_tokens":3,"total_tokens":8}}\n\ndata: [DONE]\n\n'),
]


def test_sse_first_token_is_the_first_non_empty_delta() -> None:
    rec = Recorder("openai", start=0.98)
    for now, data in SSE_TRANSCRIPT:
        rec.feed(now, data)
    s = rec.finish(1.2, origin=0.5)
    assert s.ttft == pytest.approx(0.07)  # the role-only chunk does not count
    # "llo" completes its event at 1.07, "!" only when its blank line comes at 1.11
    assert s.gaps == pytest.approx([0.02, 0.04])
    assert s.output_tokens == 3
    assert [s.start, s.end] == pytest.approx([0.48, 0.7])
    assert s.error is None


NDJSON_TRANSCRIPT = [
    (2.0, b'{"model":"m","message":{"role":"assistant","content":""},"done":false}\n'),
    (2.1, b'{"model":"m","message":{"role":"assistant","content":"Hi"},"done":false}\n{"mo'),
    (2.3, b'del":"m","message":{"role":"assistant","content":" there"},"done":false}\n'),
    (2.4, b'{"model":"m","message":{"role":"assistant","content":""},"done":true,'),
    (2.5, b'"done_reason":"stop","eval_count":2,"prompt_eval_count":9}\n'),
]


def test_ndjson_first_token_and_eval_count() -> None:
    rec = Recorder("ollama", start=2.0)
    for now, data in NDJSON_TRANSCRIPT:
        rec.feed(now, data)
    s = rec.finish(2.5)
    assert s.ttft == pytest.approx(0.1)
    assert s.gaps == pytest.approx([0.2])
    assert s.output_tokens == 2
    assert s.error is None


def test_ndjson_last_line_without_newline_still_counts() -> None:
    rec = Recorder("ollama", start=0.0)
    rec.feed(0.1, b'{"message":{"content":"x"},"done":true,"eval_count":1}')
    s = rec.finish(0.2)
    assert s.ttft == pytest.approx(0.1)
    assert s.output_tokens == 1


@pytest.mark.parametrize(
    ("dialect", "data", "message"),
    [
        ("ollama", b'{"message":{"content":"a"}}\n{"error":"engine went away"}\n', "went away"),
        ("openai", b'data: {"error":{"message":"boom","type":"x"}}\n\n', "boom"),
        ("openai", b"data: {not json\n\n", "bad JSON"),
        ("ollama", b"[1, 2]\n", "not an object"),
    ],
)
def test_in_band_errors_are_recorded(dialect: str, data: bytes, message: str) -> None:
    rec = Recorder(dialect, start=0.0)  # type: ignore[arg-type]
    rec.feed(0.1, data)
    assert message in (rec.finish(0.2).error or "")


def test_non_stream_bodies_give_tokens_but_no_ttft() -> None:
    rec = Recorder("openai", start=0.0)
    rec.feed_body(b'{"choices":[{"message":{"content":"hi"}}],"usage":{"completion_tokens":7}}')
    s = rec.finish(0.5)
    assert (s.ttft, s.output_tokens, s.gaps) == (None, 7, [])
    rec = Recorder("ollama", start=0.0)
    rec.feed_body(b'{"message":{"content":"hi"},"done":true,"eval_count":4}')
    assert rec.finish(0.5).output_tokens == 4
    assert openai_chunk({"usage": {"completion_tokens": True}}).tokens is None


def test_request_bodies_per_dialect() -> None:
    body = request_body(OPENAI, "p", 64)
    assert (body["ignore_eos"], body["temperature"], body["max_tokens"]) == (True, 0, 64)
    assert body["stream_options"] == {"include_usage": True}
    plain = request_body(Target("d", "http://e", "openai", False, None, "m"), "p", 8)
    assert "stream_options" not in plain
    assert plain["stream"] is False
    ollama = request_body(OLLAMA, "p", 64)
    assert ollama["options"] == {"temperature": 0, "num_predict": 64}
    assert "ignore_eos" not in ollama
    assert OPENAI.endpoint == "http://e:1/v1/chat/completions"
    assert OLLAMA.endpoint == "http://g:2/api/chat"


# -- report ----------------------------------------------------------------------------------
def test_comparison_rows_and_markdown() -> None:
    base = summarize(level(sample(0, 0.001), sample(0, 0.001), wall=0.5))
    gw = summarize(level(sample(0, 0.003), sample(0, 0.003), wall=1.0, target=OLLAMA))
    rows = comparison_rows({4: [(base, {"gateway_cpu": 0.0}), (gw, {"gateway_cpu": 3e-4})]})
    assert "req_ratio" not in rows[0]
    assert rows[1]["req_ratio"] == pytest.approx(0.5)
    assert rows[1]["added_p50"] == pytest.approx(0.002)
    table = Table(
        "T",
        [
            Column("target", "target"),
            Column("req_ratio", "ratio", "x"),
            Column("added_p50", "added", "+ms"),
            Column("gateway_cpu", "cpu", "ms"),
        ],
        rows,
    )
    assert markdown_table(table).splitlines()[2:] == [
        "| target | ratio | added | cpu |",
        "| --- | ---: | ---: | ---: |",  # text left, figures right
        "| direct | — | — | 0.00 |",
        "| gateway /api | 0.500 | +2.00 | 0.30 |",
    ]
    assert format_value(math.pi, "f1") == "3.1"
    assert format_value(12, "int") == "12"


def test_write_results_keeps_samples_and_settings_but_no_keys(tmp_path: Path) -> None:
    result = level(sample(0.0, 0.5, 0.1, gaps=[0.2]))
    table = Table(
        "T", columns("target", "req_per_s"), comparison_rows({2: [(summarize(result), {})]})
    )
    json_path, md_path = write_results(
        tmp_path / "out",
        "fake",
        title="t",
        settings={"rounds": 1},
        tables=[table],
        notes=["a note"],
        runs=[{"round": 0, "result": result}],
    )
    record = orjson.loads(json_path.read_bytes())
    assert record["settings"] == {"rounds": 1}
    assert record["runs"][0]["result"]["samples"][0]["gaps"] == [0.2]
    assert record["runs"][0]["result"]["target"]["api_key"] == "<redacted>"
    assert b'"k"' not in json_path.read_bytes()
    assert (json_path.name[:5], md_path.suffix) == ("fake-", ".md")
    assert "| direct | 0.5 |" in md_path.read_text()
