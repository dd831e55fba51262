"""The router with the real embedded engine among fakes.

A second `vllama serve` is attached to the session's real vLLM engine (no
second vLLM: that would take a minute and 4 GB) and given fake backends with
fault flags and a fake Ollama. Asserted on the wire, with the official clients:
balancing spreads over the real engine and a fake serving the same model name;
refused, stalled and "model not found" backends are passed over before the
first byte, to the real engine, which says so in X-Vllama-Backend; a backend
that fails after the first byte ends the stream in-band and the real engine is
never asked (its own counters do not move).
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import Counter
from pathlib import Path

import httpx
import ollama
import openai
import psutil
import pytest

from tests.conftest import Served
from tests.integration.test_routing import BACKEND, backend, fake_ollama, gateway, metric
from tests.procs import Proc, fake_engine, free_port, wait_http

pytestmark = pytest.mark.engine

#: What the fake engine writes; the real model does not.
FAKE_TEXT = "The quick brown fox"
HI = [{"role": "user", "content": "Say hello."}]


def real_engine(served: Served) -> tuple[str, str, str]:
    """The session engine's URL, internal key (from its environment: tests
    only) and served model name."""
    url = served.proc.engine_url(timeout=10)  # waits for the gateway's ready line
    found = re.findall(r"engine \w+ -> ready \(pid (\d+)\)", served.proc.output)
    assert found, "no ready line with the engine's pid in the gateway's log"
    key = psutil.Process(int(found[-1])).environ()["VLLM_API_KEY"]
    listing = httpx.get(url + "/v1/models", headers={"Authorization": f"Bearer {key}"})
    return url, key, str(listing.json()["data"][0]["id"])


def twin(procs: list[Proc], model: str, *flags: str) -> str:
    """A fake engine serving ``model`` (key ``engine-key``), up and answering."""
    port = free_port()
    procs.append(fake_engine(port, *flags, model=model))
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/health", timeout=30, proc=procs[-1].popen)
    return url


def attach(engine: tuple[str, str, str]) -> tuple[str, ...]:
    return ("--engine-url", engine[0], "--engine-api-key", engine[1])


def engine_work(url: str) -> float:
    """Prompt tokens the real engine has processed plus requests it finished:
    moves whenever it is asked anything."""
    total = 0.0
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith(("vllm:prompt_tokens_total", "vllm:request_success_total")):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_balancing_spreads_over_the_real_engine_and_a_fake_twin(
    served: Served, tmp_path: Path, procs: list[Proc]
) -> None:
    engine = real_engine(served)
    model = engine[2]
    fake = twin(procs, model, "--token-delay", "0.05")
    config = backend("twin", fake, models=[model])
    url = gateway(procs, tmp_path, config, *attach(engine))
    seen: list[str] = []
    with openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0) as client:
        for _ in range(4):  # idle backends tie: sequential requests take turns
            raw = client.chat.completions.with_raw_response.create(
                model=model, messages=HI, max_tokens=4, temperature=0
            )
            answer = raw.parse()
            seen.append(raw.headers[BACKEND])
            text = answer.choices[0].message.content or ""
            assert answer.usage is not None
            assert 0 < answer.usage.completion_tokens <= 4
            if seen[-1] == "engine":  # real tokens from the real model
                assert text
                assert text != FAKE_TEXT
            else:
                assert text == FAKE_TEXT
    assert Counter(seen) == {"engine": 2, "twin": 2}, seen

    async def together() -> list[httpx.Response]:
        body = {"model": model, "messages": HI, "stream": False, "options": {"num_predict": 4}}
        async with httpx.AsyncClient(timeout=120) as client:
            return await asyncio.gather(
                *(client.post(url + "/api/chat", json=body) for _ in range(6))
            )

    answers = asyncio.run(together())
    assert all(r.status_code == 200 for r in answers), [r.text for r in answers]
    assert {r.headers[BACKEND] for r in answers} == {"engine", "twin"}
    assert metric(url, "vllama_backend_requests_total", backend="engine") >= 3


def test_fallback_before_the_first_byte_to_the_real_engine(
    served: Served, tmp_path: Path, procs: list[Proc]
) -> None:
    engine = real_engine(served)
    model = engine[2]
    stalled = twin(procs, model, "--stall-before-first-byte", "30")
    lacking = fake_ollama(procs, model="something-else:latest")
    config = (
        '[[backends]]\nname = "engine"\nkind = "managed"\nrole = "fallback"\n'
        # Active checks off: the passive path (refused, stalled) is what is tested.
        + backend("refuser", f"http://127.0.0.1:{free_port()}", models=[model], health_path="")
        + backend("staller", stalled, models=[model], health_path="")
        + "[[backends]]\n"
        + f'name = "lacking"\nkind = "ollama"\nurl = "{lacking}"\nmodels = ["{model}"]\n'
    )
    url = gateway(
        procs, tmp_path, config, *attach(engine), env={"VLLAMA_UPSTREAM_FIRST_BYTE_TIMEOUT": "2"}
    )
    before = engine_work(engine[0])
    # Ollama's client: refused, stalled, "model not found", then the real engine.
    client = ollama.Client(host=url)
    try:
        answer = client.chat(model=model, messages=HI, options={"num_predict": 6, "temperature": 0})
    finally:
        client.close()
    assert answer.message.content
    assert answer.message.content != FAKE_TEXT
    assert answer.done is True
    assert 0 < (answer.eval_count or 0) <= 6
    assert engine_work(engine[0]) > before  # the real engine did the work
    assert metric(url, "vllama_backend_requests_total", backend="engine") == 1
    for name in ("refuser", "staller"):
        assert metric(url, "vllama_backend_failures_total", backend=name) == 1
    assert metric(url, "vllama_backend_failures_total", backend="lacking") == 0
    assert [r["path"] for r in httpx.get(lacking + "/fake/requests").json()] == ["/api/chat"]
    # OpenAI's client, streaming: the same way, and the header names the real engine.
    with (
        openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0) as client,
        client.chat.completions.with_streaming_response.create(
            model=model, messages=HI, max_tokens=6, temperature=0, stream=True
        ) as response,
    ):
        assert response.headers[BACKEND] == "engine"
        text = "".join(
            chunk.choices[0].delta.content or "" for chunk in response.parse() if chunk.choices
        )
    assert text
    assert text != FAKE_TEXT
    for name in ("refuser", "staller"):
        assert metric(url, "vllama_backend_failures_total", backend=name) == 2


def test_no_retry_after_the_first_byte_the_real_engine_is_not_asked(
    served: Served, tmp_path: Path, procs: list[Proc]
) -> None:
    engine = real_engine(served)
    model = engine[2]
    cutter = twin(procs, model, "--error-mid-stream", "3", "--token-delay", "0.01")
    ollama_url = fake_ollama(procs, "--error-mid-stream", "3", model=model)
    config = (
        '[[backends]]\nname = "engine"\nkind = "managed"\nrole = "fallback"\n'
        + backend("cutter", cutter, models=[model])
        + "[[backends]]\n"
        + f'name = "ollama-cutter"\nkind = "ollama"\nurl = "{ollama_url}"\nmodels = ["{model}"]\n'
    )
    url = gateway(procs, tmp_path, config, *attach(engine))
    before = engine_work(engine[0])
    body = {"model": model, "messages": HI}
    served_by = []
    for _ in range(2):  # one to each (they take turns): translated, then Ollama's own
        answer = httpx.post(url + "/api/chat", json=body, timeout=60)
        assert answer.status_code == 200
        served_by.append(answer.headers[BACKEND])
        lines = [json.loads(line) for line in answer.text.splitlines()]
        assert [line.get("done") for line in lines[:-1]] == [False] * 3, lines
        assert set(lines[-1]) == {"error"}  # the cut, in-band
    assert served_by == ["cutter", "ollama-cutter"]
    relayed = httpx.post(url + "/v1/chat/completions", json={**body, "stream": True}, timeout=60)
    assert relayed.headers[BACKEND] == "cutter"
    events = [e for e in relayed.text.split("\n\n") if e.startswith("data: ")]
    assert "error" in json.loads(events[-1].removeprefix("data: "))
    assert engine_work(engine[0]) == before  # no duplicate generation anywhere
    assert metric(url, "vllama_backend_requests_total", backend="engine") == 0
    assert len(httpx.get(ollama_url + "/fake/requests").json()) == 1
