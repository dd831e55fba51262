"""`vllama create` from a GGUF file, end to end: the CLI uploads the blob, the
gateway converts it with the engine's python (~30 s of CPU, once) and lists it
with its SYSTEM and PARAMETER defaults. Attach mode: the engine is the fake one."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.procs import VLLAMA, Proc, engine_python, fake_engine, free_port, vllama_serve, wait_http
from vllama.models.bundled import locate_bundled_gguf


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[str]:
    engine_port, port = free_port(), free_port()
    engine: Proc = fake_engine(engine_port)
    proc = vllama_serve(
        port,
        tmp_path,
        "--engine-url",
        f"http://127.0.0.1:{engine_port}",
        "--engine-api-key",
        "engine-key",
        "--engine-python",
        str(engine_python()),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/health", timeout=30, proc=proc.popen)
        yield url
    finally:
        proc.stop()
        proc.kill_group()
        engine.stop()


def cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OLLAMA_HOST": url.removeprefix("http://")}
    return subprocess.run(
        [str(VLLAMA), *args], capture_output=True, text=True, env=env, timeout=600, check=False
    )


def test_blob_routes(gateway: str) -> None:
    data = b"hello blob"
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    assert httpx.head(f"{gateway}/api/blobs/{digest}").status_code == 404
    wrong = httpx.post(f"{gateway}/api/blobs/sha256:{'0' * 64}", content=data)
    assert wrong.status_code == 400
    assert "digest mismatch" in wrong.json()["error"]
    assert httpx.post(f"{gateway}/api/blobs/{digest}", content=data).status_code == 201
    assert httpx.head(f"{gateway}/api/blobs/{digest}").status_code == 200
    assert httpx.post(f"{gateway}/api/blobs/sha256:nothex", content=data).status_code == 400
    lora = httpx.post(
        f"{gateway}/api/create", json={"model": "x", "from": "y", "adapters": {"a": digest}}
    )
    assert (lora.status_code, lora.json()) == (
        400,
        {"error": "an ADAPTER needs FROM a model that is on disk"},
    )
    quantize = httpx.post(
        f"{gateway}/api/create", json={"model": "x", "from": "y", "quantize": "q4_K_M"}
    )
    assert quantize.status_code == 501
    missing = httpx.post(f"{gateway}/api/create", json={"model": "x", "from": "nope"})
    assert (missing.status_code, missing.json()) == (404, {"error": "model 'nope' not found"})
    push = httpx.post(f"{gateway}/api/push", json={"model": "x"})
    assert push.status_code == 501


@pytest.mark.slow
def test_create_from_a_gguf_file(gateway: str, tmp_path: Path) -> None:
    gguf = locate_bundled_gguf(engine_python())
    modelfile = tmp_path / "Modelfile"
    modelfile.write_text(f"FROM {gguf}\nSYSTEM Be brief.\nPARAMETER temperature 0.1\n")
    created = cli(gateway, "create", "mini", "-f", str(modelfile))
    assert created.returncode == 0, created.stderr
    assert "converting to bf16 safetensors" in created.stderr
    assert created.stderr.rstrip().endswith("success")
    shown = httpx.post(f"{gateway}/api/show", json={"model": "mini"}).json()
    assert shown["details"]["format"] == "safetensors"
    assert shown["details"]["family"] == "llama"
    assert shown["system"] == "Be brief."
    assert shown["parameters"] == "temperature 0.1"
    assert shown["model_info"]["llama.context_length"] == 8192
    assert "completion" in shown["capabilities"]
    listed = cli(gateway, "list")
    assert "mini:latest" in listed.stdout
    digest = "sha256:" + hashlib.sha256(gguf.read_bytes()).hexdigest()
    assert httpx.head(f"{gateway}/api/blobs/{digest}").status_code == 200  # kept for reuse
