"""Streams are metered whatever the client asked for and however it leaves:
`vllama serve` attached to the fake engine, with keys, over real sockets.

The fake engine runs apart (attach mode) so that the test can ask it directly
for the bytes a client would get from vLLM, to compare with what the gateway
relays.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.admin import ADMIN, bearer, counted_usage, new_key, usage_of
from tests.procs import attached_stack

ENGINE_KEY = "engine-key"
FINGERPRINT = "vllm-0.32.0-fa4e1234"
CHAT = {"model": "fake", "messages": [{"role": "user", "content": "one two three"}]}
PROMPT = {"model": "fake", "prompt": "one two three four"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(engine URL, gateway URL): keys required, usage written only at the end."""
    flags = ("--token-delay", "0.02", "--fingerprint-mode", "custom")
    flags += ("--fingerprint-value", FINGERPRINT)
    env = {"VLLAMA_AUTH": "on", "VLLAMA_ADMIN_KEY": ADMIN, "VLLAMA_USAGE_FLUSH_INTERVAL": "3600"}
    home = tmp_path_factory.mktemp("streams-home")
    with attached_stack(home, *flags, model="fake", env=env) as urls:
        yield urls


def stable(stream: bytes) -> bytes:
    """A stream without what differs between two runs of one request."""
    stream = re.sub(rb'"id":"(chatcmpl|cmpl)-[0-9a-f]+"', rb'"id":"ID"', stream)
    return re.sub(rb'"created":\d+', rb'"created":0', stream)


def post_raw(url: str, path: str, body: dict[str, Any], headers: dict[str, str]) -> bytes:
    with httpx.stream("POST", url + path, json=body, headers=headers, timeout=30) as response:
        assert response.status_code == 200, response.read()
        return b"".join(response.iter_raw())


@pytest.mark.parametrize(
    ("path", "body", "prompt"),
    [("/v1/chat/completions", CHAT, 3), ("/v1/completions", PROMPT, 4)],
)
def test_a_stream_without_include_usage_is_metered_and_relayed_as_asked(
    stack: tuple[str, str], path: str, body: dict[str, Any], prompt: int
) -> None:
    engine, url = stack
    key_id, key = new_key(url)
    streamed = {**body, "stream": True, "max_tokens": 5}
    relayed = post_raw(url, path, streamed, bearer(key))
    direct = post_raw(engine, path, streamed, bearer(ENGINE_KEY))
    assert b'"usage"' not in direct
    assert direct.count(FINGERPRINT.encode()) == 1  # on the finishing chunk, as vLLM does
    assert stable(relayed) == stable(direct)
    assert usage_of(url, key_id) == (1, prompt, 5)

    # A client that asked for usage itself gets the engine's bytes untouched.
    asked = {**streamed, "stream_options": {"include_usage": True}}
    relayed = post_raw(url, path, asked, bearer(key))
    direct = post_raw(engine, path, asked, bearer(ENGINE_KEY))
    assert b'"choices":[],"usage":' in direct
    assert stable(relayed) == stable(direct)
    assert usage_of(url, key_id) == (2, 2 * prompt, 10)


def test_the_openai_sdk_stream_without_usage_still_spends_the_token_budget(
    stack: tuple[str, str],
) -> None:
    _, url = stack
    key_id, key = new_key(url, tpm=10)
    with openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0) as client:
        chunks = list(client.chat.completions.create(**CHAT, stream=True, max_tokens=12))
        assert all(c.usage is None for c in chunks)
        assert chunks[-1].choices[0].finish_reason == "length"
        assert chunks[-1].system_fingerprint == FINGERPRINT
        assert "".join(c.choices[0].delta.content or "" for c in chunks).split()[0] == "The"
        with pytest.raises(openai.RateLimitError):  # 15 tokens charged on a budget of 10
            client.chat.completions.create(**CHAT, stream=True, max_tokens=1)
    assert usage_of(url, key_id) == (1, 3, 12)


@pytest.mark.parametrize("path", ["/api/chat", "/api/generate"])
def test_an_ollama_client_that_leaves_mid_stream_is_charged_what_was_generated(
    stack: tuple[str, str], path: str
) -> None:
    _, url = stack
    key_id, key = new_key(url)
    body = dict(CHAT) if path == "/api/chat" else {"model": "fake", "prompt": "one two three"}
    body["options"] = {"num_predict": 200}  # 4 s at the fake's 0.02 s per token
    with httpx.stream("POST", url + path, json=body, headers=bearer(key), timeout=30) as answer:
        lines = answer.iter_lines()
        for _ in range(4):
            assert '"done":false' in next(lines)
    requests, prompt, completion = counted_usage(url, key_id)
    assert (requests, prompt) == (1, 3)
    assert 4 <= completion < 200


@pytest.mark.parametrize("include_usage", [False, True])
def test_an_openai_client_that_leaves_mid_stream_is_charged_the_tokens_it_got(
    stack: tuple[str, str], include_usage: bool
) -> None:
    _, url = stack
    key_id, key = new_key(url)
    body: dict[str, object] = {**CHAT, "stream": True, "max_tokens": 200}  # 4 s of tokens
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    with httpx.stream(
        "POST", url + "/v1/chat/completions", json=body, headers=bearer(key), timeout=30
    ) as answer:
        events = (line for line in answer.iter_lines() if line.startswith("data: "))
        for _ in range(6):  # the role, then 5 tokens
            assert '"choices"' in next(events)
    requests, _, completion = counted_usage(url, key_id)
    assert requests == 1
    assert 5 <= completion < 200
