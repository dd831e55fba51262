"""`vllama serve` managing a fake engine with fault flags: the supervisor,
readiness and error paths, end to end through the real CLI, in seconds."""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path

import httpx

from tests.procs import FAKE_PYTHON, Proc, alive, free_port, managed_fake, vllama_serve, wait_http

CHAT = {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}


def test_answers_at_once_and_503_until_the_engine_is_ready(
    tmp_path: Path, procs: list[Proc]
) -> None:
    proc, url = managed_fake(tmp_path, "--start-delay 3")
    procs.append(proc)
    assert httpx.get(url + "/").text == "Ollama is running"
    ollama_503 = httpx.post(url + "/api/chat", json=CHAT)
    assert ollama_503.status_code == 503
    assert int(ollama_503.headers["retry-after"]) >= 1
    assert set(ollama_503.json()) == {"error"}
    openai_503 = httpx.post(url + "/v1/chat/completions", json=CHAT)
    assert openai_503.status_code == 503
    assert openai_503.json()["error"]["type"] == "api_error"
    assert httpx.get(url + "/ready").status_code == 503
    wait_http(url + "/ready", timeout=30, proc=proc.popen)
    answer = httpx.post(url + "/api/chat", json={**CHAT, "stream": False}).json()
    assert answer["done"] is True
    assert answer["eval_count"] == 16
    assert answer["message"]["content"].startswith("The quick")


def test_engine_that_dies_at_start_fails_fast_with_its_last_words(tmp_path: Path) -> None:
    port = free_port()
    proc = vllama_serve(
        port,
        tmp_path,
        "--engine-python",
        str(FAKE_PYTHON),
        "--model",
        "fake",
        env={"FAKE_ENGINE_PYTHON": sys.executable, "FAKE_ENGINE_FLAGS": "--exit-on-start"},
    )
    assert proc.popen is not None
    started = time.monotonic()
    code = proc.popen.wait(30)
    assert time.monotonic() - started < 20
    assert code == 3
    assert "OutOfMemoryError" in proc.output
    assert not alive(proc.tree())


def test_sigterm_stops_engine_group_even_if_it_ignores_sigterm(
    tmp_path: Path, procs: list[Proc]
) -> None:
    proc, url = managed_fake(
        tmp_path, "--ignore-sigterm --spawn-child", VLLAMA_ENGINE_STOP_GRACE="1"
    )
    procs.append(proc)
    wait_http(url + "/ready", timeout=30, proc=proc.popen)
    tree = proc.tree()
    assert len(tree) >= 3  # gateway, engine, the engine's child
    started = time.monotonic()
    assert proc.stop(signal.SIGTERM, timeout=30) == 0
    assert time.monotonic() - started < 15
    deadline = time.monotonic() + 5
    while alive(tree) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not alive(tree), "engine processes outlived the gateway"


def test_engine_error_mid_stream_is_an_in_band_line(tmp_path: Path, procs: list[Proc]) -> None:
    proc, url = managed_fake(tmp_path, "--error-mid-stream 3")
    procs.append(proc)
    wait_http(url + "/ready", timeout=30, proc=proc.popen)
    response = httpx.post(url + "/api/chat", json=CHAT, timeout=30)
    assert response.status_code == 200
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert [line["done"] for line in lines[:-1]] == [False] * (len(lines) - 1)
    assert set(lines[-1]) == {"error"}
    relayed = httpx.post(url + "/v1/chat/completions", json={**CHAT, "stream": True}, timeout=30)
    assert relayed.status_code == 200
    events = [e for e in relayed.text.split("\n\n") if e.startswith("data: ")]
    assert "error" in json.loads(events[-1].removeprefix("data: "))


def test_stalled_engine_is_cut_off_with_a_clear_error(tmp_path: Path, procs: list[Proc]) -> None:
    proc, url = managed_fake(
        tmp_path, "--stall-before-first-byte 30", VLLAMA_UPSTREAM_FIRST_BYTE_TIMEOUT="1"
    )
    procs.append(proc)
    wait_http(url + "/ready", timeout=30, proc=proc.popen)
    started = time.monotonic()
    response = httpx.post(url + "/api/chat", json=CHAT, timeout=30)
    assert time.monotonic() - started < 10
    assert response.status_code == 504
    assert "engine" in response.json()["error"]
    assert httpx.get(url + "/health", timeout=2).status_code == 200


def _running(engine_url: str) -> float:
    text = httpx.get(engine_url + "/metrics").text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("vllm:num_requests_running")
    )


def test_client_disconnect_cancels_the_engine_request(tmp_path: Path, procs: list[Proc]) -> None:
    proc, url = managed_fake(tmp_path, "--token-delay 0.05")
    procs.append(proc)
    wait_http(url + "/ready", timeout=30, proc=proc.popen)
    engine_url = proc.engine_url()
    body = {**CHAT, "options": {"num_predict": 500}}
    for path, payload in (
        ("/api/chat", body),
        ("/v1/chat/completions", {**CHAT, "stream": True, "max_tokens": 500}),
    ):
        with httpx.stream("POST", url + path, json=payload, timeout=30) as response:
            chunks = response.iter_raw()
            next(chunks)
            next(chunks)
            assert _running(engine_url) == 1
        deadline = time.monotonic() + 5
        while _running(engine_url) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _running(engine_url) == 0, path
