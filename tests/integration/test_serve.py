"""`vllama serve` with the real embedded engine: up, chatting, safe, recovering."""

from __future__ import annotations

import os
import re
import signal
import time
import urllib.parse

import httpx
import psutil
import pytest

from tests.conftest import MODEL, Served

pytestmark = pytest.mark.engine


def test_root_answers_like_ollama(served: Served) -> None:
    response = httpx.get(served.url + "/")
    assert response.status_code == 200
    assert response.text == "Ollama is running"
    assert httpx.get(served.url + "/ready").json()["status"] == "ready"


def test_chat_through_the_official_client(served: Served) -> None:
    client = served.ollama()
    answer = client.chat(
        model=MODEL,
        messages=[{"role": "user", "content": "Say hello."}],
        options={"num_predict": 12, "temperature": 0},
    )
    assert answer.message.role == "assistant"
    assert isinstance(answer.message.content, str)
    assert answer.message.content
    assert answer.done is True
    assert 0 < (answer.eval_count or 0) <= 12
    assert (answer.prompt_eval_count or 0) > 0


def test_engine_is_loopback_only_and_keyed(served: Served) -> None:
    engine = urllib.parse.urlsplit(served.engine_url)
    assert engine.hostname == "127.0.0.1"
    assert engine.port != urllib.parse.urlsplit(served.url).port
    unauthorised = httpx.get(served.engine_url + "/v1/models")
    assert unauthorised.status_code == 401


def _engine_pid(served: Served) -> int:
    """The pid the supervisor launched, as its own log line reports it."""
    found = re.findall(r"engine \w+ -> ready \(pid (\d+)\)", served.proc.output)
    assert found, "no ready line with the engine's pid in the gateway's log"
    pid = int(found[-1])
    assert psutil.pid_exists(pid)
    return pid


@pytest.mark.engine_restart
def test_engine_crash_gives_503_then_recovers(served: Served) -> None:
    client = served.ollama()
    os.kill(_engine_pid(served), signal.SIGKILL)
    deadline = time.monotonic() + 30
    seen_503 = None
    while time.monotonic() < deadline and seen_503 is None:
        response = httpx.post(
            served.url + "/api/chat",
            json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
            timeout=30,
        )
        if response.status_code == 503:
            seen_503 = response
        time.sleep(0.2)
    assert seen_503 is not None, "the gateway never reported the engine down"
    assert int(seen_503.headers["retry-after"]) >= 1
    assert "error" in seen_503.json()
    openai_503 = httpx.post(
        served.url + "/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert openai_503.status_code == 503
    assert openai_503.json()["error"]["message"]
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if httpx.get(served.url + "/ready").status_code == 200:
            break
        time.sleep(1)
    answer = client.chat(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}], options={"num_predict": 4}
    )
    assert answer.done
    assert answer.message.content
    assert "restart #1" in served.proc.output
    assert "vllama_engine_restarts_total 1.0" in httpx.get(served.url + "/metrics").text
