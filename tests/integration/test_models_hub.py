"""Model management end to end: `vllama serve` (fake engine) pulls from a stand-in
Hub with the real `huggingface_hub`, over loopback; the official `ollama` client
and the `vllama` CLI drive it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import ollama
import pytest

from tests.fakes.fake_hub import make_tiny_model, write_safetensors
from tests.procs import ROOT, VLLAMA, Proc, alive, free_port, vllama_serve, wait_http

FAKE_PYTHON = ROOT / "tests" / "fakes" / "vllm-python"
FAKE_HUB = ROOT / "tests" / "fakes" / "fake_hub.py"
TOKEN = "hf_test_token"
WANTED = [
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "special_tokens_map.json",
    "tokenizer.json",
    "tokenizer_config.json",
]


@dataclass
class Hub:
    url: str
    proc: Proc

    def log(self) -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = httpx.get(self.url + "/_fake/log").json()
        return entries

    def gets(self, file: str) -> list[dict[str, Any]]:
        return [e for e in self.log() if e.get("file") == file and e["method"] == "GET"]

    def faults(self, **faults: Any) -> None:
        httpx.post(self.url + "/_fake/faults", json=faults).raise_for_status()


@dataclass
class Gateway:
    url: str
    proc: Proc
    home: Path
    cache: Path
    clients: list[ollama.Client] = field(default_factory=list)

    def client(self) -> ollama.Client:
        if not self.clients:
            self.clients.append(ollama.Client(host=self.url))
        return self.clients[0]

    def close(self) -> None:
        for client in self.clients:
            client.close()
        self.proc.stop()
        self.proc.kill_group()

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "OLLAMA_HOST": self.url.removeprefix("http://")}
        return subprocess.run(
            [str(VLLAMA), *args], capture_output=True, text=True, env=env, timeout=60, check=False
        )


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("repo") / "tiny", hidden=256)


@pytest.fixture(scope="module")
def big_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Weights over huggingface_hub's 10 MiB read chunk, so a cut can keep bytes."""
    return make_tiny_model(tmp_path_factory.mktemp("repo") / "big", hidden=384, vocab=32768)


@pytest.fixture
def hub(repo: Path, big_repo: Path) -> Iterator[Hub]:
    port = free_port()
    argv = [sys.executable, str(FAKE_HUB), "--port", str(port), "--token", TOKEN]
    argv += ["--repo", f"org/big={big_repo}"]
    for repo_id in ("org/tiny", "org/gated", "org/huge"):
        argv += ["--repo", f"{repo_id}={repo}"]
    proc = Proc([*argv, "--gated", "org/gated", "--inflate", "org/huge"]).start()
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/_fake/log", timeout=20, proc=proc.popen)
    yield Hub(url, proc)
    proc.stop()


def serve(home: Path, hub: Hub, *args: str, **env: str) -> Proc:
    env_all: dict[str, str] = {
        "HF_ENDPOINT": hub.url,
        "HF_HUB_CACHE": str(home / "hf-cache"),
        "HF_TOKEN": "",
        "HF_HOME": str(home / "hf-home"),
        "HF_HUB_DISABLE_XET": "1",
        "FAKE_ENGINE_PYTHON": sys.executable,
        "FAKE_ENGINE_FLAGS": "",
        **env,
    }
    port = free_port()
    return vllama_serve(port, home, *args, env=env_all)


@pytest.fixture
def gateways() -> Iterator[list[Gateway]]:
    started: list[Gateway] = []
    yield started
    for gateway in started:
        gateway.close()


def start(home: Path, hub: Hub, started: list[Gateway], *args: str, **env: str) -> Gateway:
    if not args:
        args = ("--engine-python", str(FAKE_PYTHON), "--model", "fake")
    proc = serve(home, hub, *args, **env)
    port = proc.argv[proc.argv.index("--port") + 1]
    gateway = Gateway(f"http://127.0.0.1:{port}", proc, home, home / "hf-cache")
    started.append(gateway)
    wait_http(gateway.url + "/health", timeout=30, proc=proc.popen)
    return gateway


@pytest.fixture
def gateway(tmp_path: Path, hub: Hub, gateways: list[Gateway]) -> Gateway:
    return start(tmp_path, hub, gateways)


def test_pull_streams_ollama_progress_the_official_client_reads(
    gateway: Gateway, hub: Hub, repo: Path
) -> None:
    events = list(gateway.client().pull("org/tiny", stream=True))
    statuses = [e.status for e in events]
    assert statuses[0] == "pulling manifest"
    assert statuses[-3:] == ["writing manifest", "removing any unused layers", "success"]
    files = [s.removeprefix("pulling ") for s in statuses if s and s.startswith("pulling ")]
    assert sorted(set(files) - {"manifest"}) == WANTED  # README, GGUF, original/ left out
    weights = [e for e in events if e.status == "pulling model.safetensors"]
    size = (repo / "model.safetensors").stat().st_size
    assert {e.total for e in weights} == {size}
    assert weights[-1].completed == size
    assert all(e.digest and e.digest.startswith("sha256:") for e in weights)
    assert statuses.index("verifying sha256 digest") > statuses.index("pulling model.safetensors")
    assert not hub.gets("README.md")
    assert not hub.gets("model.gguf")
    assert hub.log()[0]["path"] == "/api/models/org/tiny/revision/main"  # :latest is main

    listed = {m.model: m for m in gateway.client().list().models}
    tiny = listed["org/tiny:latest"]
    assert tiny.size == sum((repo / f).stat().st_size for f in WANTED)
    assert tiny.digest is not None
    assert len(tiny.digest) == 40
    assert tiny.details is not None
    assert tiny.details.format == "safetensors"
    assert tiny.details.family == "llama"
    shown = gateway.client().show("ORG/Tiny")  # case-insensitive, :latest implied
    assert shown.modelinfo is not None
    assert shown.modelinfo["llama.context_length"] == 2048
    assert shown.modelinfo["llama.embedding_length"] == 256
    assert shown.capabilities is not None
    assert "completion" in shown.capabilities
    snapshot = gateway.cache / "models--org--tiny" / "snapshots" / tiny.digest
    assert (snapshot / "model.safetensors").read_bytes() == (
        repo / "model.safetensors"
    ).read_bytes()


def _pull(client: ollama.Client, name: str, stream: bool) -> None:
    if stream:
        list(client.pull(name, stream=True))
    else:
        client.pull(name)


def test_pull_errors_get_ollama_status_codes(gateway: Gateway) -> None:
    cases = [
        ("org/nope", 404, "not found"),
        ("org/tiny:v9", 404, "revision 'v9' of org/tiny not found"),
        ("org/gated", 401, "HF_TOKEN"),
        ("org/huge", 507, "not enough disk space"),
        ("no-such-alias:7b", 404, "alias catalogue"),
        ("bad name!", 400, "invalid model name"),
    ]
    for name, status, text in cases:
        for stream in (True, False):
            with pytest.raises(ollama.ResponseError) as caught:
                _pull(gateway.client(), name, stream)
            assert caught.value.status_code == status, (name, caught.value)
            assert text in caught.value.error, name
    assert gateway.client().list().models[0].model == "fake:latest"  # nothing half-pulled is listed


def test_gated_repo_with_token(tmp_path: Path, hub: Hub, gateways: list[Gateway]) -> None:
    gateway = start(tmp_path, hub, gateways, HF_TOKEN=TOKEN)
    assert gateway.client().pull("hf.co/org/gated").status == "success"
    with pytest.raises(ollama.ResponseError) as caught:
        gateway.client().pull("org/nope")
    assert caught.value.status_code == 404
    assert "HF_TOKEN" not in caught.value.error
    assert "hf.co/org/gated:latest" in [m.model for m in gateway.client().list().models]


def test_gated_repo_with_a_token_that_has_no_access(
    tmp_path: Path, hub: Hub, gateways: list[Gateway]
) -> None:
    gateway = start(tmp_path, hub, gateways, HF_TOKEN="hf_someone_else")
    with pytest.raises(ollama.ResponseError) as caught:
        gateway.client().pull("org/gated")
    assert caught.value.status_code == 403
    assert "has no access" in caught.value.error


def test_download_cut_mid_file_resumes_with_range(
    gateway: Gateway, hub: Hub, big_repo: Path
) -> None:
    hub.faults(cut={"model.safetensors": 12_000_000})
    assert gateway.client().pull("org/big").status == "success"
    starts = [e["range_start"] for e in hub.gets("model.safetensors")]
    assert starts[0] == 0
    assert 0 < starts[1] <= 12_000_000, "the second request must resume from the bytes kept"
    big = gateway.client().show("org/big")
    assert big.modelinfo is not None
    assert big.modelinfo["llama.vocab_size"] == 32768
    stored = gateway.home / "models" / "org+big@latest" / "model.safetensors"
    assert stored.read_bytes() == (big_repo / "model.safetensors").read_bytes()


def test_failed_pull_keeps_finished_files_for_the_next_one(gateway: Gateway, hub: Hub) -> None:
    hub.faults(fail=["tokenizer.json"])
    response = httpx.post(gateway.url + "/api/pull", json={"model": "org/tiny"}, timeout=60)
    assert response.status_code == 200  # failed after the first line: in-band, as Ollama
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert set(lines[-1]) == {"error"}
    assert "tokenizer.json" not in [m.model for m in gateway.client().list().models]
    hub.faults(fail=[])
    assert gateway.client().pull("org/tiny").status == "success"
    assert len(hub.gets("model.safetensors")) == 1  # not downloaded again
    assert len(hub.gets("tokenizer.json")) == 2


def test_concurrent_pulls_share_one_download(gateway: Gateway, hub: Hub) -> None:
    hub.faults(rate=1_000_000)  # ~2 s for the weights
    results: list[list[str]] = [[], []]

    def pull(i: int) -> None:
        results[i] = [e.status or "" for e in gateway.client().pull("org/tiny", stream=True)]

    threads = [threading.Thread(target=pull, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert results[0][-1] == results[1][-1] == "success"
    assert "pulling model.safetensors" in results[1]
    assert len(hub.gets("model.safetensors")) == 1


def test_catalogue_cli_and_copy_delete(gateway: Gateway) -> None:
    pulled = gateway.cli("pull", "org/tiny")
    assert pulled.returncode == 0, pulled.stderr
    assert "success" in pulled.stderr
    assert "model.safetensors" in pulled.stderr

    assert gateway.cli("cp", "org/tiny", "mine").returncode == 0
    listed = gateway.cli("list")
    assert listed.returncode == 0
    lines = {line.split()[0]: line for line in listed.stdout.splitlines()[1:]}
    assert {"org/tiny:latest", "mine:latest", "fake:latest"} <= set(lines)
    assert lines["mine:latest"].split()[1] == lines["org/tiny:latest"].split()[1]  # same digest
    shown = gateway.cli("show", "mine")
    assert "llama" in shown.stdout
    assert "2048" in shown.stdout
    details = gateway.client().show("mine").details
    assert details is not None
    assert details.parent_model == "org/tiny:latest"

    removed = httpx.request("DELETE", gateway.url + "/api/delete", json={"model": "org/tiny"})
    assert (removed.status_code, removed.content) == (200, b"")
    assert "completion" in (gateway.client().show("mine").capabilities or [])  # the copy stands
    cached = gateway.cache / "models--org--tiny"
    assert (cached / "snapshots").is_dir()  # still used by "mine"
    again = gateway.cli("rm", "org/tiny")
    assert again.returncode == 1
    assert "model 'org/tiny' not found" in again.stderr
    missing = httpx.post(gateway.url + "/api/copy", json={"source": "nope", "destination": "x"})
    assert (missing.status_code, missing.json()) == (404, {"error": 'model "nope" not found'})
    bad = httpx.post(gateway.url + "/api/copy", json={"source": "mine", "destination": "a b"})
    assert (bad.status_code, bad.json()) == (400, {"error": 'destination "a b" is invalid'})
    assert gateway.cli("rm", "mine").returncode == 0
    assert not list(cached.glob("blobs/*"))  # the last name gone: the cache is freed
    assert [m.model for m in gateway.client().list().models] == ["fake:latest"]


def test_created_model_applies_its_system_and_parameters(
    tmp_path: Path, hub: Hub, gateways: list[Gateway]
) -> None:
    first = start(tmp_path, hub, gateways)
    assert first.client().pull("org/tiny").status == "success"
    first.close()
    # the engine now serves the pulled folder; "pirate" shares its weights
    gateway = start(
        tmp_path, hub, gateways, "--engine-python", str(FAKE_PYTHON), "--model", "org/tiny"
    )
    wait_http(gateway.url + "/ready", timeout=30, proc=gateway.proc.popen)
    modelfile = tmp_path / "Modelfile"
    modelfile.write_text(
        'FROM org/tiny\nSYSTEM """You are a pirate\nalways."""\nPARAMETER num_predict 3\n'
    )
    created = gateway.cli("create", "pirate", "-f", str(modelfile))
    assert created.returncode == 0, created.stderr
    assert "success" in created.stderr
    shown = httpx.post(gateway.url + "/api/show", json={"model": "pirate"}).json()
    assert shown["system"] == "You are a pirate\nalways."
    assert shown["parameters"] == "num_predict 3"
    assert 'SYSTEM """You are a pirate' in shown["modelfile"]
    chat = {"model": "pirate", "messages": [{"role": "user", "content": "hi there"}]}
    answer = httpx.post(gateway.url + "/api/chat", json={**chat, "stream": False}).json()
    assert answer["eval_count"] == 3  # the PARAMETER default
    assert answer["done_reason"] == "length"
    assert answer["prompt_eval_count"] == 2 + 5  # the user's words and the SYSTEM's
    own = {**chat, "stream": False, "options": {"num_predict": 5}}
    assert httpx.post(gateway.url + "/api/chat", json=own).json()["eval_count"] == 5
    plain = {**chat, "model": "org/tiny", "stream": False}
    assert httpx.post(gateway.url + "/api/chat", json=plain).json()["eval_count"] == 16
    made = gateway.client().create(
        "terse", from_="pirate", system="Be terse.", parameters={"temperature": 0.5}
    )
    assert made.status == "success"  # the official client's create, defaults merged
    terse = httpx.post(gateway.url + "/api/show", json={"model": "terse"}).json()
    assert terse["parameters"] == "num_predict 3\ntemperature 0.5"
    assert terse["system"] == "Be terse."
    refused = httpx.request("DELETE", gateway.url + "/api/delete", json={"model": "org/tiny"})
    assert refused.status_code == 409  # the engine is serving it


def test_sigterm_during_a_pull_exits_at_once(gateway: Gateway, hub: Hub) -> None:
    hub.faults(rate=100_000)  # the big weights would take minutes
    with httpx.stream(
        "POST", gateway.url + "/api/pull", json={"model": "org/big"}, timeout=30
    ) as response:
        lines = response.iter_lines()
        while "model.safetensors" not in next(lines):
            pass
    # the client left; the download goes on in the background until the server stops
    time.sleep(0.5)
    assert hub.gets("model.safetensors")
    started = time.monotonic()
    assert gateway.proc.stop(signal.SIGTERM, timeout=30) == 0
    assert time.monotonic() - started < 10
    assert not alive(gateway.proc.tree())


def test_partial_weights_survive_a_gateway_restart(
    tmp_path: Path, hub: Hub, gateways: list[Gateway], big_repo: Path
) -> None:
    hub.faults(rate=4_000_000)  # the ~26 MB weights take ~7 s
    first = start(tmp_path, hub, gateways)
    blobs = first.cache / "models--org--big" / "blobs"
    with httpx.stream("POST", first.url + "/api/pull", json={"model": "org/big"}, timeout=30):
        deadline = time.monotonic() + 30
        while not [p for p in blobs.glob("*.vllama-partial") if p.stat().st_size >= 10 << 20]:
            assert time.monotonic() < deadline, "no partial file of 10 MiB (one chunk) appeared"
            time.sleep(0.1)
    assert first.proc.stop(signal.SIGTERM, timeout=30) == 0  # the pull is cut
    [partial] = blobs.glob("*.vllama-partial")
    kept = partial.stat().st_size
    assert 10 << 20 <= kept < (big_repo / "model.safetensors").stat().st_size

    hub.faults(rate=None)
    second = start(tmp_path, hub, gateways)
    assert second.client().pull("org/big").status == "success"
    starts = [e["range_start"] for e in hub.gets("model.safetensors")]
    assert starts[0] == 0
    assert starts[-1] == kept, "the new pull must resume from the bytes kept"
    stored = second.home / "models" / "org+big@latest" / "model.safetensors"
    assert stored.read_bytes() == (big_repo / "model.safetensors").read_bytes()
    assert not list(blobs.glob("*.vllama-partial"))


def test_no_hub_is_a_clear_502(tmp_path: Path, hub: Hub, gateways: list[Gateway]) -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    gateway = start(tmp_path, hub, gateways, HF_ENDPOINT=closed)
    response = httpx.post(gateway.url + "/api/pull", json={"model": "org/tiny"}, timeout=60)
    assert response.status_code == 502
    assert response.json()["error"].startswith(f"cannot reach the Hugging Face Hub at {closed}")


CHAT = {"messages": [{"role": "user", "content": "hi"}], "stream": False}


def test_a_request_for_a_model_on_disk_switches_the_engine(gateway: Gateway) -> None:
    assert gateway.client().pull("org/tiny").status == "success"
    wait_http(gateway.url + "/ready", timeout=30, proc=gateway.proc.popen)
    answer = httpx.post(gateway.url + "/api/chat", json={**CHAT, "model": "org/tiny"}, timeout=60)
    assert answer.status_code == 200, answer.text
    assert answer.json()["eval_count"] == 16  # the fake engine answers only its served name
    assert [m.model for m in gateway.client().ps().models] == ["org/tiny:latest"]
    assert gateway.proc.find(r"loading org/tiny:latest: restarting the engine")
    relayed = httpx.post(
        gateway.url + "/v1/chat/completions", json={**CHAT, "model": "org/tiny"}, timeout=60
    )
    assert relayed.status_code == 200
    gone = httpx.post(gateway.url + "/api/chat", json={**CHAT, "model": "fake"}, timeout=60)
    assert gone.status_code == 404  # one engine, one model: "fake" is not on disk


def test_switch_waits_a_bounded_time_then_503(
    tmp_path: Path, hub: Hub, gateways: list[Gateway]
) -> None:
    gateway = start(
        tmp_path,
        hub,
        gateways,
        FAKE_ENGINE_FLAGS="--start-delay 3",
        VLLAMA_MODEL_LOAD_WAIT="0.5",
    )
    assert gateway.client().pull("org/tiny").status == "success"
    wait_http(gateway.url + "/ready", timeout=30, proc=gateway.proc.popen)
    busy = httpx.post(gateway.url + "/api/chat", json={**CHAT, "model": "org/tiny"}, timeout=60)
    assert busy.status_code == 503
    assert int(busy.headers["retry-after"]) >= 1
    assert "is loading" in busy.json()["error"]
    wait_http(gateway.url + "/ready", timeout=30, proc=gateway.proc.popen)
    done = httpx.post(gateway.url + "/api/chat", json={**CHAT, "model": "org/tiny"}, timeout=60)
    assert done.status_code == 200


def test_switch_off_refuses_models_not_loaded(
    tmp_path: Path, hub: Hub, gateways: list[Gateway]
) -> None:
    gateway = start(tmp_path, hub, gateways, VLLAMA_MODEL_SWITCH="off")
    assert gateway.client().pull("org/tiny").status == "success"
    refused = httpx.post(gateway.url + "/api/chat", json={**CHAT, "model": "org/tiny"})
    assert refused.status_code == 400
    assert "on disk but not loaded" in refused.json()["error"]


def make_adapter(folder: Path) -> Path:
    """A small PEFT LoRA folder, as `peft` saves one."""
    folder.mkdir(parents=True)
    config = {"peft_type": "LORA", "r": 12, "lora_alpha": 16, "target_modules": ["up_proj"]}
    (folder / "adapter_config.json").write_text(json.dumps(config))
    tensors = {
        "base_model.model.model.layers.0.mlp.up_proj.lora_A.weight": [12, 256],
        "base_model.model.model.layers.0.mlp.up_proj.lora_B.weight": [512, 12],
    }
    write_safetensors(folder / "adapter_model.safetensors", tensors)
    return folder


def test_adapter_is_its_own_model_served_with_vllm_lora(gateway: Gateway, tmp_path: Path) -> None:
    assert gateway.client().pull("org/tiny").status == "success"
    make_adapter(tmp_path / "lora")
    modelfile = tmp_path / "Modelfile"
    modelfile.write_text("FROM org/tiny\nADAPTER ./lora\nPARAMETER num_predict 4\n")
    created = gateway.cli("create", "pirate-lora", "-f", str(modelfile))
    assert created.returncode == 0, created.stderr
    shown = gateway.client().show("pirate-lora")
    assert shown.details is not None
    assert (shown.details.format, shown.details.parent_model) == ("lora", "org/tiny:latest")
    assert shown.modelinfo is not None
    assert shown.modelinfo["llama.context_length"] == 2048  # what the base model says
    listed = [m.model for m in gateway.client().list().models]
    assert {"org/tiny:latest", "pirate-lora:latest"} <= set(listed)

    wait_http(gateway.url + "/ready", timeout=30, proc=gateway.proc.popen)
    chat = {**CHAT, "model": "pirate-lora"}
    answer = httpx.post(gateway.url + "/api/chat", json=chat, timeout=60)
    assert answer.status_code == 200, answer.text
    assert answer.json()["eval_count"] == 4  # the fake engine knew the adapter's name
    log = (gateway.home / "logs" / "engine.log").read_text()
    assert "LoRA modules: pirate-lora:latest=" in log
    base = httpx.post(gateway.url + "/api/chat", json={**CHAT, "model": "org/tiny"}, timeout=60)
    assert base.json()["eval_count"] == 16  # the base, from the same engine: no restart
    assert gateway.proc.output.count("restarting the engine") == 1
