"""The Ollama API against the real embedded engine: wire format and counts."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import ollama
import pytest

from tests.conftest import MODEL, Served

pytestmark = pytest.mark.engine

CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "Count to five."}]}


def _lines(response: httpx.Response) -> list[dict[str, object]]:
    raw = response.text
    assert raw.endswith("\n")
    return [json.loads(line) for line in raw.splitlines()]


def test_chat_stream_is_ndjson_with_exact_final_metrics(served: Served) -> None:
    body = {**CHAT, "options": {"num_predict": 10, "temperature": 0}}
    response = httpx.post(served.url + "/api/chat", json=body, timeout=60)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/x-ndjson"
    lines = _lines(response)
    assert len(lines) >= 2
    for line in lines[:-1]:
        assert line["done"] is False
        assert line["model"] == MODEL
        assert line["message"]["role"] == "assistant"  # type: ignore[index]
    final = lines[-1]
    assert final["done"] is True
    assert final["done_reason"] == "length"
    assert final["eval_count"] == 10
    for key in ("total_duration", "load_duration", "prompt_eval_duration", "eval_duration"):
        assert isinstance(final[key], int), key
        assert final[key] > 0, key  # type: ignore[operator]
    assert final["total_duration"] >= final["prompt_eval_duration"] + final["eval_duration"]  # type: ignore[operator]
    assert str(final["created_at"]).endswith("Z")


def test_generate_stream_and_non_stream(served: Served) -> None:
    client = served.ollama()
    parts = list(
        client.generate(model=MODEL, prompt="The sky is", stream=True, options={"num_predict": 8})
    )
    assert parts[-1].done
    assert parts[-1].eval_count == 8
    text = "".join(p.response for p in parts)
    assert text
    whole = client.generate(model=MODEL, prompt="The sky is", options={"num_predict": 8})
    assert whole.done
    assert whole.response
    assert whole.eval_count == 8
    assert whole.prompt_eval_count
    assert whole.prompt_eval_count > 3


def test_raw_generate_uses_completions(served: Served) -> None:
    response = httpx.post(
        served.url + "/api/generate",
        json={
            "model": MODEL,
            "prompt": "1, 2, 3,",
            "raw": True,
            "stream": False,
            "options": {"num_predict": 5, "temperature": 0},
        },
        timeout=60,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["eval_count"] == 5
    assert body["prompt_eval_count"] == 7 or body["prompt_eval_count"] > 0
    assert "context" not in body or isinstance(body["context"], list)


def test_temperature_zero_with_seed_is_reproducible(served: Served) -> None:
    client = served.ollama()
    options = {"num_predict": 12, "temperature": 0, "seed": 42}
    first = client.chat(model=MODEL, messages=CHAT["messages"], options=options)  # type: ignore[arg-type]
    second = client.chat(model=MODEL, messages=CHAT["messages"], options=options)  # type: ignore[arg-type]
    assert first.message.content == second.message.content


def test_names_case_and_latest(served: Served) -> None:
    tags = httpx.get(served.url + "/api/tags").json()
    names = [m["name"] for m in tags["models"]]
    assert MODEL in names
    entry = tags["models"][names.index(MODEL)]
    assert entry["details"]["format"] == "safetensors"
    assert entry["size"] > 0
    assert entry["digest"]
    for typed in ("SmolLM2:135M", MODEL):
        response = httpx.post(
            served.url + "/api/generate",
            json={"model": typed, "prompt": "Hi", "stream": False, "options": {"num_predict": 2}},
            timeout=60,
        )
        assert response.status_code == 200, response.text
        assert response.json()["model"] == typed


def test_show_and_ps(served: Served) -> None:
    client = served.ollama()
    shown = client.show(MODEL)
    assert "completion" in (shown.capabilities or [])
    assert shown.modelinfo is not None
    assert any(k.endswith(".context_length") for k in shown.modelinfo)
    assert shown.details
    assert shown.details.family
    running = client.ps()
    assert [m.model for m in running.models] == [MODEL]
    assert running.models[0].expires_at is not None
    assert running.models[0].context_length
    assert running.models[0].context_length >= 512


def test_errors_in_ollama_shape(served: Served) -> None:
    url = served.url
    cases = [
        ("/api/chat", {}, 400, "model is required"),
        ("/api/generate", {}, 404, "model '' not found"),
        ("/api/chat", {"model": "nope", "messages": []}, 404, "model 'nope' not found"),
        ("/api/show", {"model": "nope"}, 404, "model 'nope' not found"),
        ("/api/chat", {**CHAT, "think": "loud"}, 400, 'invalid think value: "loud"'),
        ("/api/chat", {**CHAT, "options": {"num_predict": "x"}}, 400, 'option "num_predict"'),
    ]
    for path, body, status, message in cases:
        response = httpx.post(url + path, json=body, timeout=30)
        assert response.status_code == status, (path, body, response.text)
        assert message in response.json()["error"], (path, response.text)
    bad = httpx.post(url + "/api/chat", content=b"{not json", timeout=30)
    assert bad.status_code == 400
    assert "error" in bad.json()
    with pytest.raises(ollama.ResponseError) as caught:
        served.ollama().chat(model="missing:1b", messages=[])
    assert caught.value.status_code == 404
    embed = httpx.post(url + "/api/embed", json={"model": MODEL, "input": "x"})
    assert embed.status_code == 400
    assert "does not support embedding" in embed.json()["error"]
    missing = httpx.post(url + "/api/push", json={"model": MODEL})  # no network in tests
    assert missing.headers["content-type"].startswith("application/json")
    assert "error" in missing.json()


def test_load_and_unload_shortcuts(served: Served) -> None:
    load = httpx.post(served.url + "/api/generate", json={"model": MODEL}).json()
    assert load["done"] is True
    assert load["done_reason"] == "load"
    assert load["response"] == ""
    unload = httpx.post(
        served.url + "/api/chat", json={"model": MODEL, "messages": [], "keep_alive": 0}
    ).json()
    assert unload["done_reason"] == "unload"
    assert unload["message"]["content"] == ""
    assert httpx.get(served.url + "/api/ps").json()["models"] == []  # the engine is stopped
    deadline = time.monotonic() + 600  # load it again for the tests after this one
    while True:
        load = httpx.post(served.url + "/api/generate", json={"model": MODEL}, timeout=120)
        if load.status_code == 200 or time.monotonic() > deadline:
            break
        assert load.status_code == 503, load.text
    assert load.json()["done_reason"] == "load"
    assert [m["model"] for m in httpx.get(served.url + "/api/ps").json()["models"]] == [MODEL]


async def test_32_concurrent_streams_stay_intact(served: Served) -> None:
    client = served.ollama_async()

    async def one(i: int) -> tuple[int, str, int]:
        text = ""
        last = None
        stream = await client.chat(
            model=MODEL,
            messages=[{"role": "user", "content": f"Tell me about the number {i}."}],
            options={"num_predict": 16, "temperature": 0},
            stream=True,
        )
        async for part in stream:
            text += part.message.content or ""
            last = part
        assert last is not None
        assert last.done
        return i, text, last.eval_count or 0

    try:
        results = await asyncio.gather(*(one(i) for i in range(32)))
    finally:
        await client.close()
    assert sorted(r[0] for r in results) == list(range(32))
    assert all(r[2] == 16 and r[1] for r in results)


def _running_requests(served: Served) -> float:
    metrics = httpx.get(served.engine_url + "/metrics").text
    total = 0.0
    for line in metrics.splitlines():
        if line.startswith("vllm:num_requests_running"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_disconnect_cancels_the_engine_request(served: Served) -> None:
    body = {**CHAT, "options": {"num_predict": 1500, "temperature": 0.8}}
    with httpx.stream("POST", served.url + "/api/chat", json=body, timeout=60) as response:
        lines = response.iter_lines()
        next(lines)
        next(lines)
        assert _running_requests(served) >= 1
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and _running_requests(served) > 0:
        time.sleep(0.1)
    assert _running_requests(served) == 0
