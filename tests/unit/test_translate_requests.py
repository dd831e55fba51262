"""Ollama chat/generate/embed requests -> the engine's OpenAI calls."""

from __future__ import annotations

import base64
import re
from typing import Any

import pytest

from vllama.errors import BadRequest
from vllama.translate.messages import sniff_image_mime
from vllama.translate.requests import (
    UpstreamCall,
    chat_request,
    embed_request,
    embeddings_request,
    generate_request,
    is_load_request,
)

SERVED = "Qwen/Qwen3-0.6B"
USAGE = {"include_usage": True}

PNG = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00"
GIF = b"GIF89a\x01\x00\x01\x00"
WEBP = b"RIFF\x24\x00\x00\x00WEBPVP8 "
B64 = {
    name: base64.b64encode(data).decode()
    for name, data in {"png": PNG, "jpeg": JPEG, "gif": GIF, "webp": WEBP}.items()
}
STREAMED = {"model": SERVED, "stream": True, "stream_options": USAGE}
EMBED = {"model": SERVED, "truncate_prompt_tokens": -1}


def _img(kind: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": f"data:image/{kind};base64,{B64[kind]}"}}


def _chat(**req: Any) -> UpstreamCall:
    return chat_request({"model": "qwen3:0.6b", **req}, SERVED)


def test_chat_minimal_streams_with_usage_by_default() -> None:
    call = _chat(messages=[{"role": "user", "content": "hi"}])
    assert call == UpstreamCall(
        "/v1/chat/completions",
        {
            "model": SERVED,
            "stream": True,
            "stream_options": USAGE,
            "messages": [{"role": "user", "content": "hi"}],
        },
        True,
    )


def test_chat_stream_false_has_no_stream_options() -> None:
    call = _chat(messages=[{"role": "user", "content": "hi"}], stream=False)
    assert call.stream is False
    assert call.body["stream"] is False
    assert "stream_options" not in call.body


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"format": "json"}, {"response_format": {"type": "json_object"}}),
        (
            {"format": {"type": "object", "properties": {"a": {"type": "integer"}}}},
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {
                        "name": "schema",
                        "schema": {"type": "object", "properties": {"a": {"type": "integer"}}},
                    },
                }
            },
        ),
        ({"format": ""}, {}),
        ({"format": None}, {}),
        ({"think": True}, {"chat_template_kwargs": {"enable_thinking": True}}),
        ({"think": False}, {"chat_template_kwargs": {"enable_thinking": False}}),
        (
            {"think": "low"},
            {"chat_template_kwargs": {"enable_thinking": True}, "reasoning_effort": "low"},
        ),
        (
            {"think": "high"},
            {"chat_template_kwargs": {"enable_thinking": True}, "reasoning_effort": "high"},
        ),
        (
            {"think": "max"},
            {"chat_template_kwargs": {"enable_thinking": True}, "reasoning_effort": "high"},
        ),
        ({"options": {"num_predict": 5, "seed": -1}}, {"max_tokens": 5}),
        ({"tools": []}, {}),
        ({"logprobs": True}, {"logprobs": True}),
        ({"logprobs": True, "top_logprobs": 3}, {"logprobs": True, "top_logprobs": 3}),
        ({"logprobs": False, "top_logprobs": 3}, {}),
        ({"keep_alive": "5m", "truncate": True, "shift": False, "unknown": 1}, {}),
    ],
)
def test_chat_body_extras(extra: dict[str, Any], expected: dict[str, Any]) -> None:
    base = _chat(messages=[{"role": "user", "content": "x"}]).body
    body = _chat(messages=[{"role": "user", "content": "x"}], **extra).body
    added = {k: v for k, v in body.items() if k not in base}
    assert added == expected


def test_tools_pass_through_unchanged() -> None:
    tools = [
        {
            "type": "function",
            "function": {
                "name": "get_weather",
                "description": "Weather for a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            },
        }
    ]
    body = _chat(messages=[{"role": "user", "content": "x"}], tools=tools).body
    assert body["tools"] is tools


def test_default_options_merge_under_request_options() -> None:
    call = chat_request(
        {
            "messages": [{"role": "user", "content": "x"}],
            "options": {"temperature": 0.1, "top_k": None},
        },
        SERVED,
        default_options={"temperature": 0.7, "top_k": 20, "stop": ["<|im_end|>"]},
    )
    assert call.body["temperature"] == 0.1
    assert call.body["top_k"] == 20  # a null in the request keeps the model default
    assert call.body["stop"] == ["<|im_end|>"]


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ({"role": "USER", "content": "hi"}, {"role": "user", "content": "hi"}),
        ({"role": "System", "content": "be brief"}, {"role": "system", "content": "be brief"}),
        ({"role": "user"}, {"role": "user", "content": ""}),
        ({"role": "user", "content": None}, {"role": "user", "content": ""}),
        ({"role": "user", "content": "x", "extra": 1}, {"role": "user", "content": "x"}),
        (
            {"role": "assistant", "content": "ok", "thinking": "secret"},
            {"role": "assistant", "content": "ok"},
        ),
        (
            {"role": "user", "content": "what?", "images": [B64["png"]]},
            {
                "role": "user",
                "content": [
                    _img("png"),
                    {"type": "text", "text": "what?"},
                ],
            },
        ),
        (
            {"role": "user", "content": "", "images": [B64["jpeg"], B64["gif"]]},
            {
                "role": "user",
                "content": [
                    _img("jpeg"),
                    _img("gif"),
                ],
            },
        ),
        ({"role": "user", "content": "x", "images": []}, {"role": "user", "content": "x"}),
    ],
)
def test_message_mapping(message: dict[str, Any], expected: dict[str, Any]) -> None:
    assert _chat(messages=[message]).body["messages"] == [expected]


@pytest.mark.parametrize(
    ("data", "mime"),
    [
        (PNG, "image/png"),
        (JPEG, "image/jpeg"),
        (b"GIF87a\x00", "image/gif"),
        (GIF, "image/gif"),
        (WEBP, "image/webp"),
        (b"RIFF\x00\x00\x00\x00WAVE", "image/jpeg"),
        (b"BM\x00\x00", "image/jpeg"),
        (b"", "image/jpeg"),
    ],
)
def test_sniff_image_mime(data: bytes, mime: str) -> None:
    assert sniff_image_mime(data) == mime


def test_image_base64_with_line_breaks_is_accepted_and_cleaned() -> None:
    wrapped = B64["webp"][:8] + "\n" + B64["webp"][8:] + "\r\n"
    msg = _chat(messages=[{"role": "user", "content": "", "images": [wrapped]}]).body["messages"]
    assert msg[0]["content"][0]["image_url"]["url"] == f"data:image/webp;base64,{B64['webp']}"


def test_tool_round_trip_history() -> None:
    messages = [
        {"role": "user", "content": "Weather in Tokyo and Paris? And the time?"},
        {
            "role": "assistant",
            "content": "",
            "thinking": "two cities",
            "tool_calls": [
                {"function": {"name": "get_weather", "arguments": {"city": "Tokyo", "unit": "c"}}},
                {"function": {"index": 1, "name": "get_weather", "arguments": {"city": "Paris"}}},
                {"id": "call_given", "function": {"name": "get_time", "arguments": {}}},
            ],
        },
        {"role": "tool", "tool_name": "get_time", "content": "12:00"},
        {"role": "tool", "tool_name": "get_weather", "content": "20C"},
        {"role": "tool", "tool_name": "get_weather", "content": "15C"},
        {"role": "tool", "tool_call_id": "explicit", "content": "?"},
    ]
    out = _chat(messages=messages).body["messages"]
    calls = out[1]["tool_calls"]
    assert [c["type"] for c in calls] == ["function"] * 3
    assert [c["function"] for c in calls] == [
        {"name": "get_weather", "arguments": '{"city":"Tokyo","unit":"c"}'},
        {"name": "get_weather", "arguments": '{"city":"Paris"}'},
        {"name": "get_time", "arguments": "{}"},
    ]
    tokyo, paris, clock = (c["id"] for c in calls)
    assert re.fullmatch(r"call_[0-9a-f]{8}", tokyo)
    assert re.fullmatch(r"call_[0-9a-f]{8}", paris)
    assert tokyo != paris
    assert clock == "call_given"
    assert "thinking" not in out[1]
    assert out[2:] == [
        {"role": "tool", "content": "12:00", "tool_call_id": "call_given", "name": "get_time"},
        {"role": "tool", "content": "20C", "tool_call_id": tokyo, "name": "get_weather"},
        {"role": "tool", "content": "15C", "tool_call_id": paris, "name": "get_weather"},
        {"role": "tool", "content": "?", "tool_call_id": "explicit"},
    ]
    # ids are deterministic: the same history gives the same body
    assert _chat(messages=messages).body == _chat(messages=messages).body


def test_tool_result_matches_most_recent_call_of_that_name() -> None:
    call = {"function": {"name": "lookup", "arguments": {"q": "a"}}}
    messages = [
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "tool_name": "lookup", "content": "A"},
        {"role": "assistant", "content": "", "tool_calls": [call]},
        {"role": "tool", "tool_name": "lookup", "content": "B"},
        {"role": "tool", "tool_name": "lookup", "content": "B again"},
    ]
    out = _chat(messages=messages).body["messages"]
    first, second = out[0]["tool_calls"][0]["id"], out[2]["tool_calls"][0]["id"]
    assert first != second
    assert [out[1]["tool_call_id"], out[3]["tool_call_id"], out[4]["tool_call_id"]] == [
        first,
        second,
        second,
    ]


def test_tool_result_without_name_answers_calls_in_order() -> None:
    messages = [
        {
            "role": "assistant",
            "tool_calls": [
                {"id": "a", "function": {"name": "f", "arguments": '{"x": 1}'}},
                {"id": "b", "function": {"name": "g", "arguments": None}},
            ],
        },
        {"role": "tool", "content": "1"},
        {"role": "tool", "content": "2"},
        {"role": "tool", "content": "3"},
    ]
    out = _chat(messages=messages).body["messages"]
    assert out[0]["tool_calls"][0]["function"]["arguments"] == '{"x": 1}'  # string kept
    assert out[0]["tool_calls"][1]["function"]["arguments"] == "{}"
    assert [m.get("tool_call_id") for m in out[1:]] == ["a", "b", None]


@pytest.mark.parametrize(
    ("req", "message"),
    [
        ({"messages": "hi"}, "messages must be an array"),
        ({"messages": {"role": "user"}}, "messages must be an array"),
        ({"messages": ["hi"]}, "each message must be an object with a string role"),
        ({"messages": [{"content": "hi"}]}, "each message must be an object with a string role"),
        ({"messages": [{"role": 1, "content": "hi"}]}, "each message must be an object"),
        ({"messages": [{"role": "user", "content": ["a"]}]}, "message content must be a string"),
        ({"messages": [{"role": "user", "images": "abc"}]}, "images must be an array"),
        ({"messages": [{"role": "user", "images": [5]}]}, "images must be an array"),
        ({"messages": [{"role": "user", "images": ["not base64!"]}]}, "invalid image data"),
        ({"messages": [{"role": "user", "images": ["abc"]}]}, "invalid image data"),
        ({"messages": [{"role": "assistant", "tool_calls": [{"function": {}}]}]}, "name"),
        ({"messages": [{"role": "assistant", "tool_calls": {"a": 1}}]}, "must be an array"),
        ({"messages": [], "think": "hard"}, 'invalid think value: "hard"'),
        ({"messages": [], "format": "yaml"}, 'invalid format: "\\"yaml\\""'),
        ({"messages": [], "format": 3}, "invalid format"),
        ({"messages": [], "options": [1]}, "options must be an object"),
        ({"messages": [], "options": {"temperature": "hot"}}, 'option "temperature" must be'),
        ({"messages": [], "stream": "yes"}, "stream must be a boolean"),
        ({"messages": [], "tools": {"x": 1}}, "tools must be an array"),
        ({"messages": [], "top_logprobs": 21}, "top_logprobs must be between 0 and 20"),
        ({"messages": [], "top_logprobs": -1}, "top_logprobs must be between 0 and 20"),
    ],
)
def test_chat_rejects(req: dict[str, Any], message: str) -> None:
    with pytest.raises(BadRequest) as info:
        chat_request(req, SERVED)
    assert message in info.value.message
    assert info.value.status == 400


def _gen(**req: Any) -> UpstreamCall:
    return generate_request({"model": "m", **req}, SERVED)


def test_generate_is_a_one_turn_chat() -> None:
    call = _gen(prompt="Why is the sky blue?", system="Be brief.", options={"num_predict": 9})
    assert call == UpstreamCall(
        "/v1/chat/completions",
        {
            "model": SERVED,
            "max_tokens": 9,
            "stream": True,
            "stream_options": USAGE,
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Why is the sky blue?"},
            ],
        },
        True,
    )


def test_generate_with_images_think_and_format() -> None:
    call = _gen(prompt="Describe", images=[B64["png"]], think="low", format="json", stream=False)
    assert call.body == {
        "model": SERVED,
        "response_format": {"type": "json_object"},
        "stream": False,
        "messages": [
            {
                "role": "user",
                "content": [
                    _img("png"),
                    {"type": "text", "text": "Describe"},
                ],
            }
        ],
        "chat_template_kwargs": {"enable_thinking": True},
        "reasoning_effort": "low",
    }


@pytest.mark.parametrize(
    ("req", "body"),
    [
        (
            {"prompt": "<|im_start|>user\nhi", "raw": True},
            {**STREAMED, "prompt": "<|im_start|>user\nhi"},
        ),
        (
            {"prompt": "def add(a, b):", "suffix": "    return c", "stream": False},
            {
                "model": SERVED,
                "stream": False,
                "prompt": "def add(a, b):",
                "suffix": "    return c",
            },
        ),
        (
            {
                "prompt": "x",
                "raw": True,
                "think": True,
                "logprobs": True,
                "top_logprobs": 2,
                "options": {"temperature": 0},
                "format": {"type": "object"},
            },
            {
                "model": SERVED,
                "temperature": 0.0,
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "schema", "schema": {"type": "object"}},
                },
                "stream": True,
                "stream_options": USAGE,
                "prompt": "x",
                "logprobs": 2,
            },
        ),
        (
            {"prompt": "x", "raw": True, "logprobs": True},
            {**STREAMED, "prompt": "x", "logprobs": 0},
        ),
        (
            {"prompt": "x", "raw": True, "system": "", "template": "", "context": []},
            {**STREAMED, "prompt": "x"},
        ),
    ],
)
def test_generate_raw_and_suffix_use_completions(req: dict[str, Any], body: dict[str, Any]) -> None:
    call = _gen(**req)
    assert call.path == "/v1/completions"
    assert call.body == body
    assert call.stream is body["stream"]


def test_generate_chat_path_logprobs_use_chat_shape() -> None:
    body = _gen(prompt="x", logprobs=True, top_logprobs=20).body
    assert (body["logprobs"], body["top_logprobs"]) == (True, 20)


RAW_ERR = "raw mode does not support template, system, or context"


@pytest.mark.parametrize(
    ("req", "message"),
    [
        ({"prompt": "x", "raw": True, "system": "s"}, RAW_ERR),
        ({"prompt": "x", "raw": True, "template": "{{ .Prompt }}"}, "raw mode does not support"),
        ({"prompt": "x", "raw": True, "context": [1, 2]}, "raw mode does not support"),
        ({"prompt": "x", "top_logprobs": 21}, "top_logprobs must be between 0 and 20"),
        ({"prompt": "x", "raw": True, "top_logprobs": 99}, "top_logprobs must be between 0 and 20"),
        ({"prompt": "x", "top_logprobs": 1.5}, "top_logprobs must be an integer"),
        ({"prompt": 5}, "prompt must be a string"),
        ({"prompt": "x", "system": ["s"]}, "system must be a string"),
        ({"prompt": "x", "raw": True, "think": "nope"}, 'invalid think value: "nope"'),
        ({"prompt": "x", "raw": True, "images": [B64["png"]]}, "images are not supported"),
        ({"prompt": "x", "images": ["%%%"]}, "invalid image data"),
    ],
)
def test_generate_rejects(req: dict[str, Any], message: str) -> None:
    with pytest.raises(BadRequest) as info:
        _gen(**req)
    assert message in info.value.message


@pytest.mark.parametrize(
    ("kind", "req", "expected"),
    [
        ("generate", {"model": "m"}, True),
        ("generate", {"model": "m", "prompt": ""}, True),
        ("generate", {"model": "m", "prompt": None, "keep_alive": 0}, True),
        ("generate", {"model": "m", "prompt": "hi"}, False),
        ("generate", {"model": "m", "prompt": " "}, False),
        ("chat", {"model": "m"}, True),
        ("chat", {"model": "m", "messages": []}, True),
        ("chat", {"model": "m", "messages": None, "keep_alive": 0}, True),
        ("chat", {"model": "m", "messages": [{"role": "user", "content": ""}]}, False),
        ("chat", {"model": "m", "prompt": ""}, True),
    ],
)
def test_is_load_request(kind: Any, req: dict[str, Any], expected: bool) -> None:
    assert is_load_request(kind, req) is expected


@pytest.mark.parametrize(
    ("req", "body"),
    [
        ({"input": "hello"}, {**EMBED, "input": ["hello"]}),
        ({"input": ["a", "b"]}, {**EMBED, "input": ["a", "b"]}),
        ({"input": ["a", ""]}, {**EMBED, "input": ["a", ""]}),
        ({"input": ""}, {**EMBED, "input": []}),
        ({}, {**EMBED, "input": []}),
        ({"input": "x", "truncate": False}, {"model": SERVED, "input": ["x"]}),
        (
            {"input": "x", "truncate": True, "dimensions": 256},
            {**EMBED, "input": ["x"], "dimensions": 256},
        ),
    ],
)
def test_embed_request(req: dict[str, Any], body: dict[str, Any]) -> None:
    assert embed_request({"model": "m", **req}, SERVED) == body


@pytest.mark.parametrize(
    ("req", "message"),
    [
        ({"input": 5}, "invalid input type"),
        ({"input": ["a", 1]}, "invalid input type"),
        ({"input": [[1, 2]]}, "invalid input type"),
        ({"input": {"text": "a"}}, "invalid input type"),
        ({"input": "x", "truncate": "no"}, "truncate must be a boolean"),
    ],
)
def test_embed_rejects(req: dict[str, Any], message: str) -> None:
    with pytest.raises(BadRequest) as info:
        embed_request(req, SERVED)
    assert info.value.message == message


@pytest.mark.parametrize(
    ("req", "body"),
    [
        ({"prompt": "hello"}, {"model": SERVED, "input": ["hello"]}),
        ({"prompt": ""}, {"model": SERVED, "input": []}),
        ({}, {"model": SERVED, "input": []}),
    ],
)
def test_embeddings_request(req: dict[str, Any], body: dict[str, Any]) -> None:
    assert embeddings_request(req, SERVED) == body


def test_embeddings_request_rejects_non_string_prompt() -> None:
    with pytest.raises(BadRequest, match="prompt must be a string"):
        embeddings_request({"prompt": ["a"]}, SERVED)
