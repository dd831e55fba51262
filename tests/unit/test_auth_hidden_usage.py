"""The filter that hides the usage the relay asked for on a client's behalf:
the client's bytes must be exactly those of the stream it asked for, however
the engine's bytes are split, and the meter must get the engine's counts."""

from __future__ import annotations

import json
from typing import Any

import pytest

from vllama.auth.hidden_usage import HiddenUsage, ask_usage
from vllama.auth.metering import Meter
from vllama.auth.principal import Principal

BASE = '"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"m"'
FP = "vllm-0.32.0-1a2b3c4d"


def event(text: str) -> bytes:
    return f"data: {text}\n\n".encode()


def chat_stream(*, usage: bool, fingerprint: str | None, null_usage: bool = False) -> bytes:
    """A chat stream as vLLM 0.32 writes it (pydantic's compact JSON, this
    field order), with or without ``include_usage``; ``null_usage`` as older
    vLLM wrote it (``"usage":null`` on every chunk when usage was asked)."""
    null = ',"usage":null' if usage and null_usage else ""
    stamp = f',"system_fingerprint":"{fingerprint}"' if fingerprint and not usage else ""
    parts = [
        event(
            "{" + BASE + ',"choices":[{"index":0,"delta":{"role":"assistant","content":""},'
            '"logprobs":null,"finish_reason":null}],"prompt_token_ids":null' + null + "}"
        ),
        event(
            "{" + BASE + ',"choices":[{"index":0,"delta":{"content":"Hi \\"usage\\":null"},'
            '"logprobs":null,"finish_reason":null,"token_ids":null}]' + null + "}"
        ),
        event(
            "{" + BASE + ',"choices":[{"index":0,"delta":{"content":" there ✓"},'
            '"logprobs":null,"finish_reason":"stop","stop_reason":null,"token_ids":null}]'
            + null
            + stamp
            + "}"
        ),
    ]
    if usage:
        tail = f',"system_fingerprint":"{fingerprint}"' if fingerprint else ""
        parts.append(
            event(
                "{" + BASE + ',"choices":[],"usage":{"prompt_tokens":7,"total_tokens":10,'
                '"completion_tokens":3}' + tail + "}"
            )
        )
    parts.append(b"data: [DONE]\n\n")
    return b"".join(parts)


def filtered(engine: bytes, splits: list[int]) -> tuple[list[bytes], list[tuple[int, int]]]:
    recorded: list[tuple[int, int]] = []
    principal = Principal("k", "k", sink=lambda _id, _m, p, c: recorded.append((p, c)))
    hidden = HiddenUsage(Meter(principal, "m"))
    out = []
    for start, end in zip([0, *splits], [*splits, len(engine)], strict=True):
        out.append(hidden.feed(engine[start:end]))
    out.append(hidden.close())
    return out, recorded


@pytest.mark.parametrize("fingerprint", [None, FP])
@pytest.mark.parametrize("null_usage", [False, True])
def test_the_client_gets_the_bytes_of_the_stream_it_asked_for(
    fingerprint: str | None, null_usage: bool
) -> None:
    engine = chat_stream(usage=True, fingerprint=fingerprint, null_usage=null_usage)
    client = chat_stream(usage=False, fingerprint=fingerprint)
    assert engine != client
    for splits in ([], list(range(1, len(engine))), [7, 300, 301, 650]):
        out, recorded = filtered(engine, splits)
        assert b"".join(out) == client, splits
        assert recorded == [(7, 3)]


def test_events_go_out_as_soon_as_they_are_complete() -> None:
    engine = chat_stream(usage=True, fingerprint=FP)
    events = [e + b"\n\n" for e in engine.split(b"\n\n") if e]
    out, _ = filtered(engine, list(_ends(events))[:-1])
    # The role and first content chunks pass at once; the finishing chunk waits
    # for the usage chunk (its fingerprint) and goes out with it; [DONE] follows.
    assert out[0] == events[0]
    assert out[1] == events[1]
    assert out[2] == b""
    assert b'"finish_reason":"stop"' in out[3]
    assert out[3].endswith(f'"{FP}"}}\n\n'.encode())
    assert out[4] == b"data: [DONE]\n\n"


def _ends(events: list[bytes]) -> list[int]:
    total, ends = 0, []
    for e in events:
        total += len(e)
        ends.append(total)
    return ends


def test_a_cut_stream_releases_what_it_held_unchanged_and_counts_nothing() -> None:
    engine = chat_stream(usage=True, fingerprint=FP)
    cut = engine[: engine.index(b'"choices":[],') - 60]
    out, recorded = filtered(cut, [])
    assert b"".join(out) == cut
    assert recorded == []


@pytest.mark.parametrize(
    ("body", "sent"),
    [
        ({"stream": True}, {"include_usage": True}),
        ({"stream": True, "stream_options": None}, {"include_usage": True}),
        ({"stream": True, "stream_options": {"include_usage": False}}, {"include_usage": True}),
        (
            {"stream": True, "stream_options": {"continuous_usage_stats": True}},
            {"continuous_usage_stats": False, "include_usage": True},
        ),
        ({"stream": True, "stream_options": {"include_usage": True}}, None),
        ({"stream": True, "stream_options": "odd"}, None),
    ],
)
def test_usage_is_asked_only_when_the_client_did_not(
    body: dict[str, Any], sent: dict[str, Any] | None
) -> None:
    asked = ask_usage({"model": "m", **body})
    if sent is None:
        assert asked is None
    else:
        assert asked is not None
        assert json.loads(json.dumps(asked["stream_options"], sort_keys=True)) == sent
        assert asked["model"] == "m"


def test_a_stream_cut_before_its_usage_is_charged_the_tokens_it_relayed() -> None:
    engine = chat_stream(usage=True, fingerprint=None)
    recorded: list[tuple[int, int]] = []
    principal = Principal("k", "k", sink=lambda _id, _m, p, c: recorded.append((p, c)))
    meter = Meter(principal, "m")
    hidden = HiddenUsage(meter)
    hidden.feed(engine[: engine.index(b'"choices":[],')])  # the role and two tokens
    hidden.close()
    meter.close()
    assert recorded == [(0, 2)]


def test_a_whole_stream_is_charged_its_usage_not_an_estimate() -> None:
    recorded: list[tuple[int, int]] = []
    principal = Principal("k", "k", sink=lambda _id, _m, p, c: recorded.append((p, c)))
    meter = Meter(principal, "m")
    meter.feed(chat_stream(usage=True, fingerprint=None))
    meter.close()
    assert recorded == [(7, 3)]
