"""Load, unload and switch, end to end: `vllama serve` manages fake engines (real
processes, real supervisor) for models in its store; the official `ollama`
client and raw HTTP drive it. keep_alive stops engines; `model_switch = add`
runs several, unloading the least recently used idle one past the limit."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import ollama
import psutil
import pytest

from tests.fakes.fake_hub import make_tiny_model
from tests.procs import Proc, alive, managed_fake, wait_http
from vllama.models.store import ModelStore

BACKEND = "x-vllama-backend"


def chat(model: str, **extra: object) -> dict[str, object]:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": False}
    return {**body, **extra}


def home_with_models(tmp_path: Path, *names: str) -> Path:
    """A store holding small models with different weights (so no two share a digest)."""
    home = tmp_path / "home"
    store = ModelStore(home / "models")
    for i, name in enumerate(names):
        folder = make_tiny_model(tmp_path / f"src-{name}", hidden=64 * (i + 1))
        store.add_from_dir(folder, name, "test")
    return home


def serve(procs: list[Proc], home: Path, flags: str = "", **env: str) -> tuple[Proc, str]:
    proc, url = managed_fake(home, flags, args=("--model", "alpha"), **env)
    procs.append(proc)
    wait_http(url + "/ready", timeout=30, proc=proc.popen)
    return proc, url


def engines(proc: Proc) -> list[psutil.Process]:
    """The fake engine processes the gateway runs now."""
    found = []
    for child in alive(proc.tree()[1:]):
        try:
            if any(part.endswith("fake_engine.py") for part in child.cmdline()):
                found.append(child)
        except psutil.Error:
            continue
    return found


def until(check: Callable[[], bool], timeout: float = 15, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not true after {timeout} s: {what}"
        time.sleep(0.1)


def ps(url: str) -> list[str]:
    return [str(m["model"]) for m in httpx.get(url + "/api/ps").json()["models"]]


@pytest.fixture
def client() -> Iterator[Callable[[str], ollama.Client]]:
    """The official client for a gateway URL; closed after the test."""
    made: list[ollama.Client] = []

    def make(url: str) -> ollama.Client:
        made.append(ollama.Client(host=url))
        return made[-1]

    yield make
    for one in made:
        one.close()


def test_keep_alive_zero_unloads_and_the_next_request_loads_again(
    tmp_path: Path, procs: list[Proc], client: Callable[[str], ollama.Client]
) -> None:
    home = home_with_models(tmp_path, "alpha")
    proc, url = serve(procs, home)
    official = client(url)
    running = official.ps().models
    assert [m.model for m in running] == ["alpha:latest"]
    assert running[0].size == ModelStore(home / "models").get("alpha").size  # type: ignore[union-attr]
    assert running[0].size_vram == 0  # CPU
    assert running[0].expires_at is not None
    assert running[0].expires_at.year > 2200  # default keep_alive: never unloaded
    first = engines(proc)
    assert len(first) == 1

    unloaded = official.generate(model="alpha", keep_alive=0)
    assert unloaded.done_reason == "unload"
    assert official.ps().models == []
    until(lambda: not alive(first), what="engine process gone")
    assert engines(proc) == []
    assert proc.find(r"unloading alpha:latest \(keep_alive 0\)")
    assert httpx.get(url + "/ready").status_code == 200  # loaded again on demand

    again = httpx.post(url + "/api/chat", json=chat("alpha"), timeout=60)
    assert again.status_code == 200, again.text
    assert again.json()["eval_count"] == 16
    assert ps(url) == ["alpha:latest"]
    second = engines(proc)
    assert len(second) == 1
    assert second[0].pid != first[0].pid

    # keep_alive 0 on a real request: answered, then unloaded right after
    answer = httpx.post(url + "/api/chat", json=chat("alpha", keep_alive=0), timeout=60)
    assert answer.json()["done"] is True
    until(lambda: ps(url) == [] and not engines(proc), timeout=5, what="unloaded after answer")


def test_keep_alive_expiry_default_and_busy_engines(
    tmp_path: Path, procs: list[Proc], client: Callable[[str], ollama.Client]
) -> None:
    home = home_with_models(tmp_path, "alpha")
    proc, url = serve(procs, home, "--token-delay 0.1", OLLAMA_KEEP_ALIVE="2")
    until(lambda: not engines(proc), timeout=10, what="idle engine unloaded by the default")

    asked = time.time()
    answer = httpx.post(url + "/api/chat", json=chat("alpha", keep_alive="3s"), timeout=60)
    assert answer.status_code == 200, answer.text
    [entry] = client(url).ps().models
    assert entry.expires_at is not None
    expires = entry.expires_at.astimezone(UTC).timestamp()
    assert asked + 3 - 1 <= expires <= time.time() + 3 + 1  # 3 s after the last request
    assert engines(proc)
    until(lambda: not engines(proc), timeout=10, what="unloaded once keep_alive expired")
    assert ps(url) == []

    # a request in flight keeps its engine, however short its keep_alive
    body = chat("alpha", keep_alive="1s", stream=True, options={"num_predict": 40})
    with httpx.stream("POST", url + "/api/chat", json=body, timeout=60) as response:
        lines = list(response.iter_lines())
    assert '"done":true' in lines[-1].replace(" ", ""), lines[-1]
    assert not any('"error"' in line for line in lines)
    until(lambda: not engines(proc), timeout=10, what="unloaded after the stream")

    forever = httpx.post(url + "/api/chat", json=chat("alpha", keep_alive=-1), timeout=60)
    assert forever.status_code == 200
    time.sleep(3.5)
    assert ps(url) == ["alpha:latest"]  # keep_alive < 0: loaded for good
    assert (
        datetime.fromisoformat(
            httpx.get(url + "/api/ps").json()["models"][0]["expires_at"].replace("Z", "+00:00")
        ).year
        > 2200
    )


def test_add_runs_one_engine_per_model_up_to_the_limit(
    tmp_path: Path, procs: list[Proc], client: Callable[[str], ollama.Client]
) -> None:
    home = home_with_models(tmp_path, "alpha", "beta")
    proc, url = serve(procs, home, VLLAMA_MODEL_SWITCH="add", VLLAMA_MAX_LOADED_MODELS="2")
    beta = httpx.post(url + "/api/chat", json=chat("beta"), timeout=60)
    assert beta.status_code == 200, beta.text
    assert beta.json()["eval_count"] == 16  # the fake engine answers only its own name
    assert beta.headers[BACKEND] == "engine-2"
    assert len(engines(proc)) == 2
    assert sorted(ps(url)) == ["alpha:latest", "beta:latest"]
    alpha = httpx.post(url + "/v1/chat/completions", json=chat("alpha"), timeout=60)
    assert alpha.status_code == 200, alpha.text
    assert alpha.headers[BACKEND] == "engine"
    assert "restarting the engine" not in proc.output
    assert (home / "logs" / "engine-2.log").is_file()

    # unloading one leaves the other; a request loads it again in its own slot
    assert client(url).chat(model="beta", messages=[], keep_alive=0).done
    assert ps(url) == ["alpha:latest"]
    assert len(engines(proc)) == 1
    again = httpx.post(url + "/api/chat", json=chat("beta"), timeout=60)
    assert again.headers[BACKEND] == "engine-2"
    assert len(engines(proc)) == 2
    tree = proc.tree()
    assert proc.stop() == 0
    until(lambda: not alive(tree), timeout=10, what="every engine stopped with the gateway")


def test_add_unloads_the_least_recently_used_idle_engine(
    tmp_path: Path, procs: list[Proc], client: Callable[[str], ollama.Client]
) -> None:
    home = home_with_models(tmp_path, "alpha", "beta")
    proc, url = serve(
        procs,
        home,
        "--token-delay 0.1",
        VLLAMA_MODEL_SWITCH="add",
        VLLAMA_MAX_LOADED_MODELS="1",
        VLLAMA_MODEL_LOAD_WAIT="3",
    )
    [alpha_engine] = engines(proc)
    short = {"options": {"num_predict": 2}}
    beta = httpx.post(url + "/api/chat", json=chat("beta", **short), timeout=60)
    assert beta.status_code == 200, beta.text
    assert ps(url) == ["beta:latest"]
    assert not alive([alpha_engine])
    assert len(engines(proc)) == 1
    assert proc.find(r"unloading alpha:latest \(room for another model")

    # beta is busy streaming: alpha cannot evict it, waits 3 s, then 503 in each dialect
    done = threading.Event()
    lines: list[str] = []

    def stream_beta() -> None:
        body = chat("beta", stream=True, options={"num_predict": 120})
        with httpx.stream("POST", url + "/api/chat", json=body, timeout=60) as response:
            lines.extend(response.iter_lines())
        done.set()

    worker = threading.Thread(target=stream_beta)
    worker.start()
    time.sleep(1.0)
    busy = httpx.post(url + "/api/chat", json=chat("alpha"), timeout=30)
    assert busy.status_code == 503
    assert int(busy.headers["retry-after"]) >= 1
    assert "busy" in busy.json()["error"]
    busy_openai = httpx.post(url + "/v1/chat/completions", json=chat("alpha"), timeout=30)
    assert busy_openai.status_code == 503
    assert "busy" in busy_openai.json()["error"]["message"]
    worker.join(30)
    assert done.is_set()
    assert lines
    assert not any('"error"' in line for line in lines)  # the stream was never cut

    # beta idle now: alpha evicts it (loading may take longer than the wait: retry)
    def alpha_answers() -> bool:
        answer = httpx.post(url + "/api/chat", json=chat("alpha", **short), timeout=60)
        assert answer.status_code in (200, 503), answer.text
        return answer.status_code == 200

    until(alpha_answers, timeout=20, what="alpha loaded once beta was idle")
    assert ps(url) == ["alpha:latest"]
    assert len(engines(proc)) == 1


@pytest.mark.parametrize("policy", ["restart", "off"])
def test_a_reload_after_keep_alive_works_whatever_the_policy(
    tmp_path: Path, procs: list[Proc], policy: str, client: Callable[[str], ollama.Client]
) -> None:
    home = home_with_models(tmp_path, "alpha")
    proc, url = serve(procs, home, VLLAMA_MODEL_SWITCH=policy)
    assert client(url).generate(model="alpha", keep_alive=0).done_reason == "unload"
    assert not engines(proc)
    loaded = client(url).generate(model="alpha")  # the load shortcut
    assert loaded.done_reason == "load"
    assert ps(url) == ["alpha:latest"]


def test_the_load_shortcut_waits_for_a_starting_engine(
    tmp_path: Path, procs: list[Proc], client: Callable[[str], ollama.Client]
) -> None:
    home = home_with_models(tmp_path, "alpha")
    proc, url = managed_fake(home, "--start-delay 2", args=("--model", "alpha"))
    procs.append(proc)
    assert httpx.get(url + "/ready").status_code == 503
    loaded = client(url).generate(model="alpha")  # `ollama run` sends this first
    assert loaded.done_reason == "load"
    assert httpx.get(url + "/ready").status_code == 200
    assert ps(url) == ["alpha:latest"]


def test_an_unload_never_stops_an_engine_a_request_is_loading(
    tmp_path: Path, procs: list[Proc]
) -> None:
    """keep_alive 0 while another request waits for the engine to start: that
    request is answered (the unload is left to keep_alive), never 503'd by a
    stop under it."""
    home = home_with_models(tmp_path, "alpha")
    proc, url = managed_fake(home, "--start-delay 2", args=("--model", "alpha"))
    procs.append(proc)
    wait_http(url + "/ready", timeout=30, proc=proc.popen)
    unload = {"model": "alpha", "keep_alive": 0}
    assert httpx.post(url + "/api/generate", json=unload, timeout=30).status_code == 200
    until(lambda: not engines(proc), what="the engine stopped")

    answers: list[httpx.Response] = []
    loading = threading.Thread(
        target=lambda: answers.append(httpx.post(url + "/api/chat", json=chat("alpha"), timeout=60))
    )
    loading.start()
    until(lambda: bool(engines(proc)), what="the engine starting again")
    during = httpx.post(url + "/api/generate", json=unload, timeout=30)
    loading.join(timeout=60)
    assert during.status_code == 200, during.text
    assert len(answers) == 1
    assert answers[0].status_code == 200, answers[0].text
    assert answers[0].json()["done"] is True
