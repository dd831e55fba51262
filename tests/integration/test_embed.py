"""Embeddings when the served model is an embedding model: Ollama's two
routes translated to the engine's /v1/embeddings, and OpenAI's relayed."""

from __future__ import annotations

import math
from pathlib import Path

import httpx

from tests.procs import Proc, managed_fake, wait_http
from tests.unit.test_model_store import make_folder
from vllama.models.store import ModelStore

BERT = {
    "architectures": ["BertModel"],
    "model_type": "bert",
    "hidden_size": 16,
    "max_position_embeddings": 512,
    "num_hidden_layers": 2,
}


def test_embed_routes_with_an_embedding_model(tmp_path: Path, procs: list[Proc]) -> None:
    folder = make_folder(tmp_path / "src", config=BERT, template=None)
    ModelStore(tmp_path / "home" / "models").add_from_dir(folder, "minilm", source="test")
    proc, url = managed_fake(tmp_path / "home", args=("--model", "minilm"))
    procs.append(proc)
    wait_http(url + "/ready", timeout=30, proc=proc.popen)
    shown = httpx.post(url + "/api/show", json={"model": "minilm"}).json()
    assert "embedding" in shown["capabilities"]

    embed = httpx.post(url + "/api/embed", json={"model": "minilm", "input": ["a b", "c"]})
    assert embed.status_code == 200, embed.text
    body = embed.json()
    assert body["model"] == "minilm"
    assert len(body["embeddings"]) == 2
    for vector in body["embeddings"]:
        assert math.isclose(math.sqrt(sum(x * x for x in vector)), 1.0, rel_tol=1e-6)
    assert body["prompt_eval_count"] == 3
    assert body["total_duration"] > 0

    empty = httpx.post(url + "/api/embed", json={"model": "minilm", "input": []}).json()
    assert empty == {"model": "minilm", "embeddings": []}

    legacy = httpx.post(url + "/api/embeddings", json={"model": "minilm", "prompt": "a b"})
    assert legacy.status_code == 200, legacy.text
    assert legacy.json()["embedding"] == body["embeddings"][0]

    relayed = httpx.post(url + "/v1/embeddings", json={"model": "minilm", "input": "a b"})
    assert relayed.status_code == 200, relayed.text
    assert relayed.json()["data"][0]["embedding"] == body["embeddings"][0]

    bad = httpx.post(url + "/api/embed", json={"model": "minilm", "input": 3})
    assert bad.status_code == 400
    assert bad.json() == {"error": "invalid input type"}
