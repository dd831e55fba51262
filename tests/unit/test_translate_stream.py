"""OpenAI streams -> Ollama NDJSON, end to end on recorded-shape vLLM bytes.

The transcripts are byte-for-byte what vLLM's OpenAI server writes (one
``data: {...}\\n\\n`` per chunk, ``usage: null`` until the usage-only last
chunk, ``data: [DONE]``). They are cut into awkward pieces, decoded with
``SSEDecoder``, fed to ``OllamaStream``, and the NDJSON bytes compared exactly.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from vllama.errors import UpstreamError
from vllama.protocol.ndjson import dumps_line
from vllama.protocol.sse import SSEDecoder
from vllama.translate.responses import (
    OllamaStream,
    Timings,
    embed_response,
    embeddings_response,
    load_response,
    openai_error_message,
)

T = "2025-06-01T12:00:00.123456789Z"
TIMINGS = Timings(arrived_ns=1_000, sent_ns=3_000, first_token_ns=10_000, done_ns=50_000)
METRICS = (
    b'"total_duration":49000,"load_duration":2000,"prompt_eval_count":12,'
    b'"prompt_eval_duration":7000,"eval_count":8,"eval_duration":40000'
)

_HEAD = (
    b'{"id":"chatcmpl-9f2c","object":"chat.completion.chunk","created":1748779200,'
    b'"model":"Qwen/Qwen3-0.6B",'
)


def _chunk(delta: str, finish: str = "null") -> bytes:
    return (
        b"data: "
        + _HEAD
        + b'"choices":[{"index":0,"delta":'
        + delta.encode()
        + b',"logprobs":null,"finish_reason":'
        + finish.encode()
        + b'}],"usage":null}\n\n'
    )


USAGE_CHUNK = (
    b"data: "
    + _HEAD
    + b'"choices":[],"usage":{"prompt_tokens":12,"total_tokens":20,"completion_tokens":8}}\n\n'
)
DONE = b"data: [DONE]\n\n"

REASONING_TRANSCRIPT = b"".join(
    [
        _chunk('{"role":"assistant","content":""}'),
        _chunk('{"reasoning_content":"The user"}'),
        _chunk('{"reasoning_content":" greets."}'),
        _chunk('{"content":"\\n\\n"}'),
        _chunk('{"content":"Hello"}'),
        _chunk('{"content":"!"}'),
        _chunk('{"content":""}', '"stop"'),
        USAGE_CHUNK,
        DONE,
    ]
)

TOOL_TRANSCRIPT = b"".join(
    [
        _chunk('{"role":"assistant","content":""}'),
        _chunk('{"reasoning":"Need weather."}'),
        _chunk(
            '{"tool_calls":[{"id":"chatcmpl-tool-1a2b","type":"function","index":0,'
            '"function":{"name":"get_weather"}}]}'
        ),
        _chunk('{"tool_calls":[{"index":0,"function":{"arguments":"{\\"city\\": \\""}}]}'),
        _chunk('{"tool_calls":[{"index":0,"function":{"arguments":"Tokyo\\"}"}}]}'),
        _chunk(
            '{"tool_calls":[{"id":"chatcmpl-tool-3c4d","type":"function","index":1,'
            '"function":{"name":"get_time","arguments":""}}]}'
        ),
        _chunk('{"content":""}', '"tool_calls"'),
        USAGE_CHUNK,
        DONE,
    ]
)

_CMPL_HEAD = (
    b'{"id":"cmpl-77","object":"text_completion","created":1748779200,"model":"Qwen/Qwen3-0.6B",'
)


def _text(text: str, finish: str = "null") -> bytes:
    return (
        b"data: "
        + _CMPL_HEAD
        + b'"choices":[{"index":0,"text":'
        + orjson.dumps(text)
        + b',"logprobs":null,"finish_reason":'
        + finish.encode()
        + b',"stop_reason":null,"prompt_logprobs":null}],"usage":null}\n\n'
    )


COMPLETION_TRANSCRIPT = b"".join(
    [
        _text("    c = a"),
        _text(" + b"),
        _text("\n", '"length"'),
        b"data: "
        + _CMPL_HEAD
        + b'"choices":[],"usage":{"prompt_tokens":12,"total_tokens":20,"completion_tokens":8}}\n\n',
        DONE,
    ]
)


def _run(kind: Any, transcript: bytes, piece: int) -> bytes:
    """Decode ``transcript`` in ``piece``-byte reads and return the NDJSON body."""
    decoder = SSEDecoder()
    stream = OllamaStream(kind, "qwen3:0.6b")
    out: list[bytes] = []
    seen_first_at: int | None = None
    for n, i in enumerate(range(0, len(transcript), piece)):
        for payload in decoder.feed(transcript[i : i + piece]):
            if payload == b"[DONE]":
                out.append(dumps_line(stream.finish(TIMINGS, T)))
                return b"".join(out)
            out.extend(dumps_line(obj) for obj in stream.feed(orjson.loads(payload), T))
            if seen_first_at is None and stream.first_token_seen:
                seen_first_at = n
    raise AssertionError("no [DONE]")


PIECES = [1, 7, 64, 100_000]


@pytest.mark.parametrize("piece", PIECES)
def test_golden_chat_with_reasoning(piece: int) -> None:
    P = b'{"model":"qwen3:0.6b","created_at":"' + T.encode() + b'",'
    assert _run("chat", REASONING_TRANSCRIPT, piece).split(b"\n") == [
        P + b'"message":{"role":"assistant","content":"","thinking":"The user"},"done":false}',
        P + b'"message":{"role":"assistant","content":"","thinking":" greets."},"done":false}',
        P + b'"message":{"role":"assistant","content":"\\n\\n"},"done":false}',
        P + b'"message":{"role":"assistant","content":"Hello"},"done":false}',
        P + b'"message":{"role":"assistant","content":"!"},"done":false}',
        P
        + b'"message":{"role":"assistant","content":""},"done_reason":"stop","done":true,'
        + METRICS
        + b"}",
        b"",
    ]


@pytest.mark.parametrize("piece", PIECES)
def test_golden_generate_with_reasoning(piece: int) -> None:
    P = b'{"model":"qwen3:0.6b","created_at":"' + T.encode() + b'",'
    assert _run("generate", REASONING_TRANSCRIPT, piece).split(b"\n") == [
        P + b'"response":"","thinking":"The user","done":false}',
        P + b'"response":"","thinking":" greets.","done":false}',
        P + b'"response":"\\n\\n","done":false}',
        P + b'"response":"Hello","done":false}',
        P + b'"response":"!","done":false}',
        P + b'"response":"","done":true,"done_reason":"stop",' + METRICS + b"}",
        b"",
    ]


@pytest.mark.parametrize("piece", PIECES)
def test_golden_chat_tool_calls_sent_whole(piece: int) -> None:
    P = b'{"model":"qwen3:0.6b","created_at":"' + T.encode() + b'",'
    assert _run("chat", TOOL_TRANSCRIPT, piece).split(b"\n") == [
        P + b'"message":{"role":"assistant","content":"","thinking":"Need weather."},"done":false}',
        P + b'"message":{"role":"assistant","content":"","tool_calls":['
        b'{"id":"chatcmpl-tool-1a2b","function":{"index":0,"name":"get_weather",'
        b'"arguments":{"city":"Tokyo"}}},'
        b'{"id":"chatcmpl-tool-3c4d","function":{"index":1,"name":"get_time","arguments":{}}}'
        b']},"done":false}',
        P
        + b'"message":{"role":"assistant","content":""},"done_reason":"stop","done":true,'
        + METRICS
        + b"}",
        b"",
    ]


@pytest.mark.parametrize("piece", PIECES)
def test_golden_raw_completion(piece: int) -> None:
    P = b'{"model":"qwen3:0.6b","created_at":"' + T.encode() + b'",'
    assert _run("generate", COMPLETION_TRANSCRIPT, piece).split(b"\n") == [
        P + b'"response":"    c = a","done":false}',
        P + b'"response":" + b","done":false}',
        P + b'"response":"\\n","done":false}',
        P + b'"response":"","done":true,"done_reason":"length",' + METRICS + b"}",
        b"",
    ]


def test_first_token_seen_flips_on_first_output_not_on_role_chunk() -> None:
    stream = OllamaStream("chat", "m")
    assert stream.feed({"choices": [{"index": 0, "delta": {"role": "assistant"}}]}, T) == []
    assert stream.feed({"choices": [{"index": 0, "delta": {"content": ""}}]}, T) == []
    assert stream.first_token_seen is False
    assert stream.feed({"choices": [{"index": 0, "delta": {"content": "a"}}]}, T) != []
    assert stream.first_token_seen is True


def test_tool_call_delta_counts_as_first_token() -> None:
    stream = OllamaStream("chat", "m")
    delta = {"tool_calls": [{"index": 0, "id": "c", "function": {"name": "f"}}]}
    assert stream.feed({"choices": [{"index": 0, "delta": delta}]}, T) == []
    assert stream.first_token_seen is True


def test_content_and_finish_in_one_chunk_emit_text_then_tools() -> None:
    stream = OllamaStream("generate", "m")
    stream.feed(
        {
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [
                            {"index": 0, "function": {"name": "f", "arguments": '{"a":'}}
                        ]
                    },
                }
            ]
        },
        T,
    )
    out = stream.feed(
        {
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "tool_calls",
                    "delta": {
                        "content": "ok",
                        "tool_calls": [{"index": 0, "function": {"arguments": "1}"}}],
                    },
                }
            ]
        },
        T,
    )
    assert [o.get("response") for o in out] == ["ok", ""]
    assert out[1]["tool_calls"] == [{"function": {"index": 0, "name": "f", "arguments": {"a": 1}}}]
    final = stream.finish(TIMINGS, T)
    assert "tool_calls" not in final
    assert final["done_reason"] == "stop"


def test_unfinished_tool_calls_ride_on_the_final_object() -> None:
    stream = OllamaStream("chat", "m")
    delta = {"tool_calls": [{"index": 0, "id": "x", "function": {"name": "f", "arguments": "{}"}}]}
    stream.feed({"choices": [{"index": 0, "delta": delta}]}, T)
    final = stream.finish(TIMINGS, T)
    assert final["message"]["tool_calls"] == [
        {"id": "x", "function": {"index": 0, "name": "f", "arguments": {}}}
    ]


def test_malformed_tool_arguments_raise_upstream_error() -> None:
    stream = OllamaStream("chat", "m")
    delta = {"tool_calls": [{"index": 0, "function": {"name": "f", "arguments": "{oops"}}]}
    stream.feed({"choices": [{"index": 0, "delta": delta}]}, T)
    with pytest.raises(UpstreamError, match="malformed tool call arguments"):
        stream.feed({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}, T)


def test_other_choices_and_empty_chunks_are_ignored() -> None:
    stream = OllamaStream("chat", "m")
    assert stream.feed({"choices": [{"index": 1, "delta": {"content": "no"}}]}, T) == []
    assert stream.feed({}, T) == []
    assert stream.feed({"choices": None}, T) == []
    assert stream.first_token_seen is False


def test_final_without_usage_omits_counts_and_keeps_durations() -> None:
    stream = OllamaStream("generate", "m")
    final = stream.finish(Timings(5, 5, None, 5), T)
    assert final == {
        "model": "m",
        "created_at": T,
        "response": "",
        "done": True,
        "done_reason": "stop",
        "total_duration": 1,
        "load_duration": 1,
        "prompt_eval_duration": 1,
        "eval_duration": 1,
    }


def test_stream_logprobs_are_translated() -> None:
    stream = OllamaStream("chat", "m")
    lp = {
        "content": [
            {
                "token": "Hi",
                "logprob": -0.25,
                "bytes": [72, 105],
                "top_logprobs": [
                    {"token": "Hi", "logprob": -0.25, "bytes": [72, 105]},
                    {"token": "Yo", "logprob": -1.5, "bytes": None},
                ],
            }
        ]
    }
    out = stream.feed({"choices": [{"index": 0, "delta": {"content": "Hi"}, "logprobs": lp}]}, T)
    assert out[0]["logprobs"] == [
        {
            "token": "Hi",
            "logprob": -0.25,
            "bytes": [72, 105],
            "top_logprobs": [
                {"token": "Hi", "logprob": -0.25, "bytes": [72, 105]},
                {"token": "Yo", "logprob": -1.5, "bytes": [89, 111]},
            ],
        }
    ]
    assert list(out[0]) == ["model", "created_at", "message", "done", "logprobs"]


@pytest.mark.parametrize(
    ("timings", "expected"),
    [
        (Timings(0, 10, 30, 100), (100, 10, 20, 70)),
        (Timings(0, 0, 0, 0), (1, 1, 1, 1)),
        (Timings(0, 10, None, 40), (40, 10, 30, 1)),
    ],
)
def test_timings(timings: Timings, expected: tuple[int, int, int, int]) -> None:
    keys = ["total_duration", "load_duration", "prompt_eval_duration", "eval_duration"]
    assert timings.durations() == dict(zip(keys, expected, strict=True))


@pytest.mark.parametrize(
    ("kind", "unload", "line"),
    [
        ("generate", False, b'"response":"","done":true,"done_reason":"load"}'),
        ("generate", True, b'"response":"","done":true,"done_reason":"unload"}'),
        (
            "chat",
            False,
            b'"message":{"role":"assistant","content":""},"done_reason":"load","done":true}',
        ),
        (
            "chat",
            True,
            b'"message":{"role":"assistant","content":""},"done_reason":"unload","done":true}',
        ),
    ],
)
def test_load_response(kind: Any, unload: bool, line: bytes) -> None:
    head = b'{"model":"llama3.2","created_at":"' + T.encode() + b'",'
    assert dumps_line(load_response(kind, "llama3.2", T, unload)) == head + line + b"\n"


def test_embed_response_orders_by_index() -> None:
    resp = {
        "object": "list",
        "data": [
            {"object": "embedding", "index": 1, "embedding": [0.3, 0.4]},
            {"object": "embedding", "index": 0, "embedding": [0.1, 0.2]},
        ],
        "usage": {"prompt_tokens": 8, "total_tokens": 8},
    }
    timings = Timings(arrived_ns=0, sent_ns=100, first_token_ns=None, done_ns=1_000)
    assert embed_response(resp, "all-minilm", timings) == {
        "model": "all-minilm",
        "embeddings": [[0.1, 0.2], [0.3, 0.4]],
        "total_duration": 1_000,
        "load_duration": 100,
        "prompt_eval_count": 8,
    }


def test_embed_response_omits_zero_count() -> None:
    out = embed_response({"data": [], "usage": {"prompt_tokens": 0}}, "e", TIMINGS)
    assert out["embeddings"] == []
    assert "prompt_eval_count" not in out


@pytest.mark.parametrize(
    ("resp", "expected"),
    [
        ({"data": [{"index": 0, "embedding": [0.5, -0.5]}]}, {"embedding": [0.5, -0.5]}),
        ({"data": []}, {"embedding": []}),
    ],
)
def test_embeddings_response(resp: dict[str, Any], expected: dict[str, Any]) -> None:
    assert embeddings_response(resp) == expected


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            b'{"error":{"message":"model is overloaded","type":"server_error","code":503}}',
            "model is overloaded",
        ),
        (
            b'{"object":"error","message":"This model\'s maximum context length is 2048 tokens.",'
            b'"type":"BadRequestError","param":null,"code":400}',
            "This model's maximum context length is 2048 tokens.",
        ),
        (b'{"error":"rate limit exceeded"}', "rate limit exceeded"),
        (b'{"detail":"Not Found"}', "Not Found"),
        (
            b'{"detail":[{"type":"missing","loc":["body","messages"],"msg":"Field required"},'
            b'{"loc":["body","temperature"],"msg":"Input should be a valid number"}]}',
            "messages: Field required; temperature: Input should be a valid number",
        ),
        (b"Internal Server Error", "Internal Server Error"),
        (b"  \n", "the engine returned an error with an empty body"),
        (b"x" * 600, "x" * 500 + "\u2026"),
        (b"\xff\xfe bad", "\ufffd\ufffd bad"),
        (b"[1,2]", "[1,2]"),
    ],
)
def test_openai_error_message(body: bytes, message: str) -> None:
    assert openai_error_message(body) == message


def test_merge_stream_folds_pieces_into_one_answer() -> None:
    from vllama.translate.stream import merge_stream

    pieces = [
        {"model": "m", "message": {"role": "assistant", "content": "Hel", "thinking": "hm"}},
        {"model": "m", "message": {"role": "assistant", "content": "lo"}},
        {"model": "m", "message": {"role": "assistant", "content": "", "tool_calls": [{"x": 1}]}},
    ]
    final = {"model": "m", "message": {"role": "assistant", "content": ""}, "done": True}
    merged = merge_stream("chat", pieces, final)
    assert merged["message"] == {
        "role": "assistant",
        "content": "Hello",
        "thinking": "hm",
        "tool_calls": [{"x": 1}],
    }
    assert merged["done"] is True
    generated = merge_stream(
        "generate", [{"response": "a"}, {"response": "b"}], {"response": "", "done": True}
    )
    assert generated == {"response": "ab", "done": True}
