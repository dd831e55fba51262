"""Bad input gets a clear error in the caller's dialect: never a 500, never a hang."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.procs import Proc, managed_fake, wait_http

CHAT = {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    proc: Proc
    proc, url = managed_fake(tmp_path_factory.mktemp("home"), "")
    try:
        wait_http(url + "/ready", timeout=30, proc=proc.popen)
        yield url
    finally:
        proc.stop()
        proc.kill_group()


def _ollama_error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert isinstance(body["error"], str)
    assert body["error"]
    return str(body["error"])


def _openai_error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert {"message", "type", "param", "code"} <= set(error)
    return str(error["message"])


@pytest.mark.parametrize(
    "raw",
    [
        b'{"model": "fake", "prompt": "\xff\xfe"}',
        b"[" * 5000 + b"]" * 5000,
        b'{"model": "fake", "messages": ' + b"[" * 3000 + b"]" * 3000 + b"}",
        b"",
        b"null",
        b'"just a string"',
    ],
)
def test_undecodable_bodies(gateway: str, raw: bytes) -> None:
    for path in ("/api/generate", "/api/chat", "/api/show", "/api/embed"):
        response = httpx.post(gateway + path, content=raw, timeout=10)
        assert response.status_code in (400, 404), (path, response.text)
        assert set(response.json()) == {"error"}
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/embeddings"):
        _openai_error(httpx.post(gateway + path, content=raw, timeout=10), 400)


def test_ten_megabyte_body_is_refused(gateway: str) -> None:
    big = b'{"model": "fake", "prompt": "' + b"a" * (10 * 1024 * 1024) + b'"}'
    assert "larger than" in _ollama_error(httpx.post(gateway + "/api/generate", content=big), 413)
    assert "larger than" in _openai_error(httpx.post(gateway + "/v1/completions", content=big), 413)


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"num_predict": "many"}, 'option "num_predict" must be of type integer'),
        ({"temperature": [1]}, 'option "temperature" must be of type float32'),
        ({"stop": 3}, 'option "stop"'),
        ("not an object", "options"),
    ],
)
def test_wrong_option_types(gateway: str, options: object, fragment: str) -> None:
    response = httpx.post(gateway + "/api/chat", json={**CHAT, "options": options})
    assert fragment in _ollama_error(response, 400)


def test_token_budget_beyond_the_context_is_a_clean_400(gateway: str) -> None:
    huge = httpx.post(
        gateway + "/api/chat", json={**CHAT, "options": {"num_predict": 10**9}}, timeout=10
    )
    assert "maximum context length" in _ollama_error(huge, 400)
    long_prompt = {"model": "fake", "prompt": "word " * 5000, "stream": False}
    assert "maximum context length" in _ollama_error(
        httpx.post(gateway + "/api/generate", json=long_prompt, timeout=10), 400
    )
    relayed = httpx.post(
        gateway + "/v1/completions", json={"model": "fake", "prompt": "x", "max_tokens": -5}
    )
    assert "max_tokens" in _openai_error(relayed, 400)


def test_negative_num_predict_means_no_cap_as_in_ollama(gateway: str) -> None:
    answer = httpx.post(
        gateway + "/api/chat", json={**CHAT, "stream": False, "options": {"num_predict": -1}}
    )
    assert answer.status_code == 200
    assert answer.json()["eval_count"] == 16  # the engine's own default length


def test_wrong_methods_and_unknown_paths_answer_json(gateway: str) -> None:
    assert _ollama_error(httpx.get(gateway + "/api/chat"), 405)
    assert _ollama_error(httpx.get(gateway + "/api/nothing"), 404) == "404 page not found"
    _openai_error(httpx.get(gateway + "/v1/chat/completions"), 405)
    _openai_error(httpx.get(gateway + "/v1/nothing"), 404)
