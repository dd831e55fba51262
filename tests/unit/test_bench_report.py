"""`vllama bench`'s pure parts: token checks, per-round ratios, report files,
prompt sets and target specs."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from vllama.bench.loadgen import LevelResult, Sample, Target, request_body
from vllama.bench.plots import series
from vllama.bench.prompts import PromptError, builtin, load, load_jsonl
from vllama.bench.report import Table, columns, comparison_rows, write_report
from vllama.bench.stats import Summary, median_summary, round_differences, round_ratios, summarize
from vllama.bench.targets import TargetError, parse_target, settings_of

A = Target("a", "http://a:1", "openai", True, "secret-key", "m")
B = Target("b", "http://b:2", "ollama", True, None, "m")


def result(
    target: Target, concurrency: int, wall: float, tokens: list[int | None], max_tokens: int = 8
) -> LevelResult:
    samples = [Sample(0.0, 0.5, 0.1, [0.05], n) for n in tokens]
    return LevelResult(target, concurrency, len(samples), max_tokens, wall, samples)


# -- token checks --------------------------------------------------------------------------
def test_summary_checks_reported_tokens_against_the_count_asked() -> None:
    s = summarize(result(B, 2, 1.0, [8, 8, 5, None]))
    assert (s.max_tokens, s.tokens_off, s.tokens_unreported) == (8, 1, 1)
    assert s.tokens_per_s == 21.0  # what the target reported, not what was asked
    rounds = [s, summarize(result(B, 2, 1.0, [8, 3]))]
    m = median_summary(rounds)
    assert (m.tokens_off, m.tokens_unreported, m.max_tokens) == (2, 1, 8)
    with pytest.raises(ValueError, match="token counts"):
        median_summary([s, summarize(result(B, 2, 1.0, [8], max_tokens=16))])


# -- per-round comparisons -----------------------------------------------------------------
def rounds_of(target: Target, walls: list[float], concurrency: int = 4) -> list[Summary]:
    return [summarize(result(target, concurrency, w, [8, 8])) for w in walls]


def test_ratios_pair_round_with_round() -> None:
    base = rounds_of(A, [1.0, 2.0, 4.0])  # the machine slows down round after round
    other = rounds_of(B, [2.0, 4.0, 8.0])  # and b is always half as fast as a in its round
    assert round_ratios(other, base, "tokens_per_s") == [0.5, 0.5, 0.5]
    assert round_differences(other, base, "tokens_per_s") == [-8.0, -4.0, -2.0]
    with pytest.raises(ValueError, match="rounds against"):
        round_ratios(other[:2], base, "tokens_per_s")
    with pytest.raises(ValueError, match="different levels"):
        round_ratios(rounds_of(B, [1.0], concurrency=8), base[:1], "req_per_s")
    with pytest.raises(ValueError, match="no figure"):
        round_ratios(other, base, "target")


def test_comparison_rows_take_the_median_of_per_round_ratios() -> None:
    base = rounds_of(A, [1.0, 1.0, 10.0])  # tok/s 16, 16, 1.6
    other = rounds_of(B, [2.0, 10.0, 20.0])  # tok/s 8, 1.6, 0.8: ratios 0.5, 0.1, 0.5
    levels = {4: [(median_summary(base), {}), (median_summary(other), {})]}
    per_round = comparison_rows(levels, {4: [base, other]})[1]
    assert per_round["tok_ratio_rounds"] == pytest.approx([0.5, 0.1, 0.5])
    assert per_round["tok_ratio"] == pytest.approx(0.5)
    assert per_round["added_p50"] == 0.0
    of_medians = comparison_rows(levels)[1]  # without rounds: ratio of the medians, 1.6 / 16
    assert of_medians["tok_ratio"] == pytest.approx(0.1)
    assert "tok_ratio_rounds" not in of_medians


# -- report files --------------------------------------------------------------------------
def test_write_report_json_markdown_and_plots(tmp_path: Path) -> None:
    runs = {(t, c): rounds_of(t, [1.0, 2.0], c) for t in (A, B) for c in (1, 4, 16)}
    levels = {c: [(median_summary(runs[t, c]), {}) for t in (A, B)] for c in (1, 4, 16)}
    rows = comparison_rows(levels, {c: [runs[A, c], runs[B, c]] for c in (1, 4, 16)})
    samples = result(A, 1, 1.0, [8, 7])
    table = Table(
        "Throughput", columns("concurrency", "target", "tokens_per_s", "tokens_off"), rows
    )
    files = write_report(
        tmp_path / "out",
        "bench",
        title="T",
        settings={"targets": [settings_of(A, {"version": "0.32.0"})]},
        tables=[table],
        notes=["a note"],
        runs=[{"round": 0, "result": samples}],
        plot_rows=rows,
    )
    record = orjson.loads(files.json.read_bytes())
    assert record["settings"]["targets"][0]["reported"] == {"version": "0.32.0"}
    assert record["settings"]["targets"][0]["key"] is True
    assert [s["output_tokens"] for s in record["runs"][0]["result"]["samples"]] == [8, 7]
    assert b"secret-key" not in files.json.read_bytes()
    assert record["tables"][0]["rows"][1]["tok_ratio_rounds"] == [1.0, 1.0]
    assert record["plots"] == [p.name for p in files.plots]
    markdown = files.markdown.read_text()
    assert "| 4 | b | 12.0 | 0 |" in markdown  # median of 16 and 8 tok/s
    assert "- a note" in markdown
    assert [p.name.rsplit("-", 1)[1] for p in files.plots] == ["throughput.png", "ttft.png"]
    for path in files.plots:
        assert f"]({path.name})" in markdown
        data = path.read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n")
        assert len(data) > 5000


def test_plot_series_per_target_sorted_and_without_gaps() -> None:
    rows = [
        {"target": "a", "concurrency": 4, "ttft_p50": 0.2},
        {"target": "b", "concurrency": 4, "ttft_p50": None},
        {"target": "a", "concurrency": 1, "ttft_p50": 0.1},
    ]
    assert series(rows, "ttft_p50") == {"a": [(1, 0.1), (4, 0.2)], "b": []}


# -- prompts -------------------------------------------------------------------------------
def test_builtin_prompt_sets_are_chat_messages() -> None:
    short, long, mixed = builtin("short"), builtin("long"), builtin("mixed")
    assert len(mixed) == len(short) + len(long)
    assert mixed[:2] == [short[0], long[0]]
    assert [m["role"] for m in long[0]] == ["system", "user"]
    assert len(long[0][1]["content"]) > 4 * len(short[0][0]["content"])
    body = request_body(A, long[0], 64)
    assert body["messages"] == list(long[0])
    with pytest.raises(PromptError, match="no built-in prompt set"):
        load("huge")


def test_jsonl_prompts_and_their_errors(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text(
        '# a comment\n{"prompt": "hi"}\n\n'
        '{"messages": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]}\n'
    )
    assert load(str(path)) == [
        ({"role": "user", "content": "hi"},),
        ({"role": "system", "content": "s"}, {"role": "user", "content": "u"}),
    ]
    for text, message in [
        ('{"prompt": "a"}\n{"text": "b"}\n', r"p.jsonl:2: expected"),
        ("{oops\n", r"p.jsonl:1: not JSON"),
        ('{"messages": [{"role": "user"}]}\n', r"p.jsonl:1: .*content"),
        ("# only a comment\n", "no prompts"),
    ]:
        path.write_text(text)
        with pytest.raises(PromptError, match=message):
            load_jsonl(path)
    with pytest.raises(PromptError, match="cannot read"):
        load_jsonl(tmp_path / "missing.jsonl")


# -- targets -------------------------------------------------------------------------------
def test_target_specs() -> None:
    t = parse_target(
        "vllm=http://h:8000/v1/,dialect=openai,key=env:K,model=m,OLLAMA_NUM_PARALLEL=4",
        environ={"K": "k1"},
    )
    assert (t.name, t.url, t.dialect, t.api_key, t.model) == (
        "vllm",
        "http://h:8000",
        "openai",
        "k1",
        "m",
    )
    assert (t.stream, t.ignore_eos, dict(t.info)) == (True, True, {"OLLAMA_NUM_PARALLEL": "4"})
    o = parse_target("ol=https://o:11434,dialect=ollama,stream=no,ignore_eos=no")
    assert (o.url, o.api_key, o.model, o.stream, o.ignore_eos) == (
        "https://o:11434",
        None,
        "",
        False,
        False,
    )
    assert "ignore_eos" not in request_body(
        parse_target("x=http://x,dialect=openai,ignore_eos=no"), "p", 4
    )
    assert settings_of(o)["ignore_eos"] is False


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("http://h:1,dialect=openai", "NAME=http"),
        ("a=h:1,dialect=openai", "NAME=http"),
        ("a=http://h:1", "dialect must be"),
        ("a=http://h:1,dialect=grpc", "dialect must be"),
        ("a=http://h:1,dialect=openai,stream=maybe", "stream must be yes or no"),
        ("a=http://h:1,dialect=openai,oops", "KEY=VALUE"),
        ("a=http://h:1,dialect=openai,key=env:NOPE", "NOPE is not set"),
    ],
)
def test_bad_target_specs(spec: str, message: str) -> None:
    with pytest.raises(TargetError, match=message):
        parse_target(spec, environ={})
