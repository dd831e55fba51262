"""Wire codecs: keep_alive (Go durations), Go timestamps, think, SSE, NDJSON."""

from __future__ import annotations

import pytest

from vllama.errors import BadRequest
from vllama.protocol.ndjson import dumps_line
from vllama.protocol.ollama import (
    OLLAMA_VERSION,
    format_time,
    parse_go_duration,
    parse_keep_alive,
    parse_think,
)
from vllama.protocol.sse import SSEDecoder, encode_event

S = 1_000_000_000
MIN = 60 * S
H = 60 * MIN


# Cases from Go's src/time/time_test.go (parseDurationTests).
@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("0", 0),
        ("5s", 5 * S),
        ("30s", 30 * S),
        ("1478s", 1478 * S),
        ("-5s", -5 * S),
        ("+5s", 5 * S),
        ("-0", 0),
        ("+0", 0),
        ("5.0s", 5 * S),
        ("5.6s", 5 * S + 600_000_000),
        ("5.s", 5 * S),
        (".5s", 500_000_000),
        ("1.004s", 1_004_000_000),
        ("100.00100s", 100 * S + 1_000_000),
        ("10ns", 10),
        ("11us", 11_000),
        ("12\u00b5s", 12_000),
        ("12\u03bcs", 12_000),
        ("13ms", 13_000_000),
        ("15m", 15 * MIN),
        ("16h", 16 * H),
        ("3h30m", 3 * H + 30 * MIN),
        ("1h30m", 90 * MIN),
        ("10.5s4m", 4 * MIN + 10 * S + 500_000_000),
        ("-2m3.4s", -(2 * MIN + 3 * S + 400_000_000)),
        ("1h2m3s4ms5us6ns", H + 2 * MIN + 3 * S + 4_000_000 + 5_000 + 6),
        ("39h9m14.425s", 39 * H + 9 * MIN + 14 * S + 425_000_000),
        ("52763797000ns", 52_763_797_000),
        ("0.3333333333333333333h", 20 * MIN),
        ("9007199254740993ns", (1 << 53) + 1),
        ("9223372036854775807ns", (1 << 63) - 1),
        ("9223372036854775.807us", (1 << 63) - 1),
        ("9223372036s854ms775us807ns", (1 << 63) - 1),
        ("-9223372036854775808ns", -(1 << 63)),
        ("0.100000000000000000000h", 6 * MIN),
    ],
)
def test_go_duration_parses_like_go(text: str, ns: int) -> None:
    assert parse_go_duration(text) == ns


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", 'time: invalid duration ""'),
        ("3", 'time: missing unit in duration "3"'),
        ("-", 'time: invalid duration "-"'),
        ("s", 'time: invalid duration "s"'),
        (".", 'time: invalid duration "."'),
        ("-.", 'time: invalid duration "-."'),
        (".s", 'time: invalid duration ".s"'),
        ("+.s", 'time: invalid duration "+.s"'),
        ("x", 'time: invalid duration "x"'),
        ("1d", 'time: unknown unit "d" in duration "1d"'),
        ("5 m", 'time: unknown unit " m" in duration "5 m"'),
        ("9223372036854775808ns", 'time: invalid duration "9223372036854775808ns"'),
        ("9223372036854775.808us", 'time: invalid duration "9223372036854775.808us"'),
        ("9223372036854ms775us808ns", 'time: invalid duration "9223372036854ms775us808ns"'),
        ("-9223372036854775809ns", 'time: invalid duration "-9223372036854775809ns"'),
        ('a"b', 'time: invalid duration "a\\"b"'),
    ],
)
def test_go_duration_errors_carry_gos_message(text: str, message: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_go_duration(text)
    assert info.value.message == message
    assert info.value.status == 400


@pytest.mark.parametrize(
    ("value", "default", "expected"),
    [
        (None, "5m", 300.0),
        (None, "-1s", None),
        (None, "0", 0.0),
        ("5m", "1h", 300.0),
        ("10m", "5m", 600.0),
        ("24h", "5m", 86400.0),
        ("1h30m", "5m", 5400.0),
        ("300ms", "5m", 0.3),
        ("-1m", "5m", None),
        ("-1ns", "5m", None),
        ("0", "5m", 0.0),
        ("0s", "5m", 0.0),
        (0, "5m", 0.0),
        (3600, "5m", 3600.0),
        (1.5, "5m", 1.5),
        (0.0, "5m", 0.0),
        (-1, "5m", None),
        (-0.5, "5m", None),
    ],
)
def test_keep_alive(value: object, default: str, expected: float | None) -> None:
    result = parse_keep_alive(value, default)
    if expected is None:
        assert result is None
    else:
        assert result == pytest.approx(expected)
        assert isinstance(result, float)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (True, "Unsupported type: 'bool'"),
        (False, "Unsupported type: 'bool'"),
        ([], "Unsupported type: '[]interface {}'"),
        ({"m": 5}, "Unsupported type: 'map[string]interface {}'"),
        ("5", 'time: missing unit in duration "5"'),
        ("five minutes", 'time: invalid duration "five minutes"'),
        ("5d", 'time: unknown unit "d" in duration "5d"'),
        ("", 'time: invalid duration ""'),
    ],
)
def test_keep_alive_rejects(value: object, message: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_keep_alive(value, "5m")
    assert info.value.message == message


@pytest.mark.parametrize(
    ("epoch_ns", "text"),
    [
        (0, "1970-01-01T00:00:00Z"),
        (1, "1970-01-01T00:00:00.000000001Z"),
        (1_500_000_000, "1970-01-01T00:00:01.5Z"),
        (1_691_177_765_499_127_000, "2023-08-04T19:36:05.499127Z"),
        (1_691_177_765_385_406_455, "2023-08-04T19:36:05.385406455Z"),
        (1_704_067_199_999_999_999, "2023-12-31T23:59:59.999999999Z"),
        (951_782_400 * S, "2000-02-29T00:00:00Z"),
    ],
)
def test_format_time_is_gos_rfc3339nano_in_utc(epoch_ns: int, text: str) -> None:
    assert format_time(epoch_ns) == text


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        (True, True),
        (False, False),
        ("low", "low"),
        ("medium", "medium"),
        ("high", "high"),
        ("max", "max"),
    ],
)
def test_think_accepts(value: object, expected: object) -> None:
    assert parse_think(value) == expected


THINK_HELP = '(must be "high", "medium", "low", "max", true, or false)'
THINK_TYPE = 'think must be a boolean or string ("high", "medium", "low", "max", true, or false)'


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            "extreme",
            f'invalid think value: "extreme" {THINK_HELP}',
        ),
        (
            "true",
            f'invalid think value: "true" {THINK_HELP}',
        ),
        (
            "HIGH",
            f'invalid think value: "HIGH" {THINK_HELP}',
        ),
        (1, THINK_TYPE),
        ([], THINK_TYPE),
    ],
)
def test_think_rejects_with_ollamas_message(value: object, message: str) -> None:
    with pytest.raises(BadRequest) as info:
        parse_think(value)
    assert info.value.message == message


def test_version_looks_like_a_release() -> None:
    major, minor, patch = OLLAMA_VERSION.split(".")
    assert (int(major), int(minor)) >= (0, 12)
    assert patch.isdigit()


@pytest.mark.parametrize(
    ("obj", "line"),
    [
        ({"a": 1, "b": "x"}, b'{"a":1,"b":"x"}\n'),
        ({"response": "h\u00e9\n"}, '{"response":"h\u00e9\\n"}\n'.encode()),
        ([], b"[]\n"),
    ],
)
def test_dumps_line(obj: object, line: bytes) -> None:
    assert dumps_line(obj) == line
    assert dumps_line(obj).count(b"\n") == 1


TRANSCRIPT = (
    b": ping\r\n"
    b'data: {"a":1}\r\n'
    b"\r\n"
    b"event: message\n"
    b"id: 7\n"
    b"retry: 100\n"
    b'data: {"b":\n'
    b"data: 2}\n"
    b"\n"
    b"data:no-space\r"
    b"\r"
    b":comment only\n"
    b"\n"
    b"data: [DONE]\n"
    b"\n"
)
EXPECTED = [b'{"a":1}', b'{"b":\n2}', b"no-space", b"[DONE]"]


def test_sse_whole_transcript() -> None:
    assert SSEDecoder().feed(TRANSCRIPT) == EXPECTED


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7, 13, 64])
def test_sse_split_chunks_give_same_events(size: int) -> None:
    decoder = SSEDecoder()
    events: list[bytes] = []
    for i in range(0, len(TRANSCRIPT), size):
        events.extend(decoder.feed(TRANSCRIPT[i : i + size]))
    assert events == EXPECTED


@pytest.mark.parametrize("cut", range(1, len(TRANSCRIPT)))
def test_sse_every_two_way_split(cut: int) -> None:
    decoder = SSEDecoder()
    events = decoder.feed(TRANSCRIPT[:cut]) + decoder.feed(TRANSCRIPT[cut:])
    assert events == EXPECTED


def test_sse_incomplete_event_is_held_back() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b'data: {"x":1}\n') == []
    assert decoder.feed(b"\n") == [b'{"x":1}']
    assert decoder.feed(b"data: [DO") == []
    assert decoder.feed(b"NE]\n\n") == [b"[DONE]"]


def test_sse_cr_at_chunk_end_then_lf_is_one_line_break() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.feed(b"\n\r") == []
    assert decoder.feed(b"\ndata: b\n\n") == [b"a", b"b"]


@pytest.mark.parametrize(
    ("payload", "frame"),
    [
        (b'{"a":1}', b'data: {"a":1}\n\n'),
        (b"[DONE]", b"data: [DONE]\n\n"),
        (b"one\ntwo", b"data: one\ndata: two\n\n"),
    ],
)
def test_encode_event_round_trips(payload: bytes, frame: bytes) -> None:
    assert encode_event(payload) == frame
    assert SSEDecoder().feed(frame) == [payload]
