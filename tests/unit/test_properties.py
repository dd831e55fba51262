"""Properties of the pure layer under generated input: decoders agree however
bytes are split, and translators answer bad input only with BadRequest."""

from __future__ import annotations

import contextlib
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from vllama.errors import BadRequest, UpstreamError
from vllama.protocol.ollama import parse_keep_alive, parse_think
from vllama.protocol.sse import SSEDecoder
from vllama.translate.options import map_options
from vllama.translate.requests import chat_request, generate_request
from vllama.translate.stream import OllamaStream

#: What orjson can hand the translators: 64-bit integers, finite floats.
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
JSON = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)
KEYS = st.sampled_from(
    [
        "model",
        "messages",
        "prompt",
        "options",
        "format",
        "think",
        "tools",
        "images",
        "raw",
        "system",
        "suffix",
        "stream",
        "keep_alive",
        "role",
        "content",
        "tool_calls",
        "num_predict",
        "temperature",
        "stop",
        "seed",
        "logprobs",
        "top_logprobs",
        "template",
        "context",
    ]
)
REQUESTS = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(KEYS, children, max_size=6),
    max_leaves=25,
)


@given(
    events=st.lists(
        st.binary(min_size=1, max_size=40).filter(lambda b: b"\n" not in b and b"\r" not in b),
        max_size=8,
    ),
    cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=10),
)
def test_sse_decoding_ignores_how_bytes_are_split(events: list[bytes], cuts: list[int]) -> None:
    wire = b"".join(b"data: " + e + b"\n\n" for e in events)
    whole = SSEDecoder().feed(wire)
    decoder = SSEDecoder()
    pieces: list[bytes] = []
    start = 0
    for cut in sorted(c for c in cuts if c <= len(wire)):
        pieces.extend(decoder.feed(wire[start:cut]))
        start = cut
    pieces.extend(decoder.feed(wire[start:]))
    assert pieces == whole
    assert len(whole) == len(events)


@settings(max_examples=400)
@given(body=st.dictionaries(KEYS, REQUESTS, max_size=8))
def test_translators_accept_or_raise_bad_request(body: dict[str, Any]) -> None:
    for translate in (chat_request, generate_request):
        try:
            call = translate(body, "served")
        except BadRequest:
            continue
        assert call.body["model"] == "served"
        assert call.path in ("/v1/chat/completions", "/v1/completions")


@given(options=JSON)
def test_options_accept_or_raise_bad_request(options: Any) -> None:
    try:
        mapped = map_options(options)
    except BadRequest:
        return
    assert isinstance(mapped, dict)
    assert "max_tokens" not in mapped or mapped["max_tokens"] > 0


@given(value=JSON)
def test_keep_alive_and_think_accept_or_raise_bad_request(value: Any) -> None:
    for parse in (lambda v: parse_keep_alive(v, "5m"), parse_think):
        with contextlib.suppress(BadRequest):
            parse(value)


@given(chunks=st.lists(JSON, max_size=6))
def test_stream_state_machine_never_crashes_on_odd_chunks(chunks: list[Any]) -> None:
    stream = OllamaStream("chat", "m")
    for chunk in chunks:
        if not isinstance(chunk, dict):
            continue
        try:
            out = stream.feed(chunk, "t")
        except UpstreamError:
            return
        assert all(obj["done"] is False for obj in out)
