"""The OpenAI API through the gateway, with the official client and raw bytes."""

from __future__ import annotations

import time

import httpx
import openai
import pytest

from tests.conftest import MODEL, Served

pytestmark = pytest.mark.engine

MESSAGES = [{"role": "user", "content": "Write a long story about a cat."}]


def test_models_list_matches_tags(served: Served) -> None:
    ids = [m.id for m in served.openai().models.list()]
    tags = [m["name"] for m in httpx.get(served.url + "/api/tags").json()["models"]]
    assert ids == tags == [MODEL]
    assert served.openai().models.retrieve(MODEL).id == MODEL


def test_chat_non_stream_with_usage(served: Served) -> None:
    answer = served.openai().chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        max_tokens=8,
        temperature=0,  # type: ignore[arg-type]
    )
    assert answer.choices[0].message.content
    assert answer.usage is not None
    assert answer.usage.completion_tokens == 8
    assert answer.model == MODEL


def test_chat_stream_with_usage_and_passthrough_fields(served: Served) -> None:
    stream = served.openai().chat.completions.create(
        model="SmolLM2:135M",
        messages=MESSAGES,  # type: ignore[arg-type]
        max_tokens=8,
        stream=True,
        stream_options={"include_usage": True},
        n=2,
        logprobs=True,
        top_logprobs=2,
    )
    chunks = list(stream)
    usage = [c.usage for c in chunks if c.usage is not None]
    assert usage
    assert usage[-1].completion_tokens == 16
    indexes = {choice.index for c in chunks for choice in c.choices}
    assert indexes == {0, 1}
    assert any(choice.logprobs for c in chunks for choice in c.choices)


def test_completions(served: Served) -> None:
    answer = served.openai().completions.create(model=MODEL, prompt="Once upon", max_tokens=5)
    assert answer.choices[0].text
    assert answer.usage
    assert answer.usage.completion_tokens == 5


def test_error_objects(served: Served) -> None:
    client = served.openai()
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="nope", messages=MESSAGES)  # type: ignore[arg-type]
    assert missing.value.status_code == 404
    assert "nope" in missing.value.message
    bad = httpx.post(served.url + "/v1/chat/completions", content=b"{oops")
    assert bad.status_code == 400
    error = bad.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    with pytest.raises(openai.BadRequestError) as relayed:
        client.chat.completions.create(
            model=MODEL,
            messages=MESSAGES,
            max_tokens=8,
            temperature=-3,  # type: ignore[arg-type]
        )
    assert relayed.value.status_code == 400
    assert "temperature" in relayed.value.message.lower()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/pause"),
        ("POST", "/invocations"),
        ("POST", "/tokenize"),
        ("POST", "/v1/load_lora_adapter"),
        ("GET", "/version"),
    ],
)
def test_engine_only_routes_are_not_reachable(served: Served, method: str, path: str) -> None:
    response = httpx.request(method, served.url + path, json={"model": MODEL, "prompt": "x"})
    assert response.status_code in (404, 405)
    assert response.headers["content-type"].startswith("application/json")


def test_request_id_round_trip(served: Served) -> None:
    sent = httpx.post(
        served.url + "/v1/completions",
        json={"model": MODEL, "prompt": "Hi", "max_tokens": 1},
        headers={"X-Request-Id": "test-id-123"},
    )
    assert sent.headers["x-request-id"] == "test-id-123"
    fresh = httpx.get(served.url + "/v1/models")
    assert len(fresh.headers["x-request-id"]) >= 16
    served.proc.wait_for("test-id-123")


def test_sse_arrives_incrementally(served: Served) -> None:
    body = {
        "model": MODEL,
        "messages": MESSAGES,
        "max_tokens": 64,
        "stream": True,
        "temperature": 0,
        "ignore_eos": True,
    }
    arrivals: list[float] = []
    with httpx.stream("POST", served.url + "/v1/chat/completions", json=body, timeout=60) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["x-accel-buffering"] == "no"
        assert "content-encoding" not in r.headers
        for chunk in r.iter_raw():
            if b"data:" in chunk:
                arrivals.append(time.monotonic())
    assert len(arrivals) > 10
    assert arrivals[-1] - arrivals[0] > 0.2, "the stream arrived as one late blob"


def test_metrics_are_the_gateways_own(served: Served) -> None:
    httpx.get(served.url + "/api/tags")
    text = httpx.get(served.url + "/metrics").text
    assert 'vllama_engine_state{state="ready"} 1.0' in text
    assert 'vllama_http_requests_total{path="/api/tags",status="200"}' in text
    assert "vllm:" not in text  # the engine's own metrics stay behind the gateway
