"""Several backends behind one `vllama serve`: balancing, affinity, breakers,
fallback before the first byte (to Ollama's native API too), and admission.

Real processes on loopback: fake vLLM engines with fault flags, a fake Ollama
server, and the gateway started with a config file listing them.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from tests.procs import (
    FAKE_PYTHON,
    ROOT,
    Proc,
    fake_engine,
    free_port,
    vllama_serve,
    wait_http,
)

FAKE_OLLAMA = ROOT / "tests" / "fakes" / "fake_ollama.py"
CHAT = {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}
BUSY = "server busy, please try again.  maximum pending requests exceeded"
BACKEND = "x-vllama-backend"


def engines(procs: list[Proc], *flag_sets: tuple[str, ...]) -> list[str]:
    """Fake engines (one per flag set), up and answering; their base URLs."""
    urls = []
    for flags in flag_sets:
        port = free_port()
        proc = fake_engine(port, *flags)
        procs.append(proc)
        urls.append(f"http://127.0.0.1:{port}")
    for url, proc in zip(urls, procs[-len(urls) :], strict=True):
        wait_http(url + "/health", timeout=30, proc=proc.popen)
    return urls


def fake_ollama(procs: list[Proc], *flags: str, model: str = "fake-ollama:latest") -> str:
    port = free_port()
    argv = [sys.executable, str(FAKE_OLLAMA), "--port", str(port), "--model", model, *flags]
    proc = Proc(argv).start()
    procs.append(proc)
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/", timeout=30, proc=proc.popen)
    return url


def gateway(
    procs: list[Proc], home: Path, config: str, *args: str, env: dict[str, str] | None = None
) -> str:
    path = home / "vllama.toml"
    path.write_text(config)
    port = free_port()
    proc = vllama_serve(port, home, "--config", str(path), *args, env=env)
    procs.append(proc)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/health", timeout=30, proc=proc.popen)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{proc.output}") from exc
    return url


def managed_gateway(procs: list[Proc], home: Path, config: str, flags: str) -> str:
    """``gateway`` with ``config`` whose managed engine is the fake one, with fault ``flags``."""
    env = {"FAKE_ENGINE_PYTHON": sys.executable, "FAKE_ENGINE_FLAGS": flags}
    managed = ("--engine-python", str(FAKE_PYTHON), "--model", "fake")
    return gateway(procs, home, config, *managed, env=env)


def attached(engine: str) -> tuple[str, ...]:
    return ("--engine-url", engine, "--engine-api-key", "engine-key")


def backend(name: str, url: str, **extra: Any) -> str:
    lines = ["[[backends]]", f'name = "{name}"', f'url = "{url}"', 'api_key = "engine-key"']
    for key, value in extra.items():
        if isinstance(value, dict):
            pairs = ", ".join(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in value.items())
            lines.append(f"{key} = {{ {pairs} }}")
        else:
            lines.append(f"{key} = {json.dumps(value)}")
    return "\n".join(lines) + "\n"


def metric(url: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith(f"{name}{{{wanted}}}"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name}{{{wanted}}} not in /metrics")


async def _chats(url: str, bodies: list[dict[str, Any]], **headers: str) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=30) as client:
        return await asyncio.gather(
            *(client.post(url + "/api/chat", json=body, headers=headers) for body in bodies)
        )


def test_balancing_spreads_and_affinity_sticks(tmp_path: Path, procs: list[Proc]) -> None:
    a, b, c = engines(procs, ("--token-delay", "0.02"), ("--token-delay", "0.02"), ())
    mapped = {"fake": "fake", "sess": "fake", "pfx": "fake"}
    config = (
        "health_interval = 0.5\n"
        + backend("b", b, models=mapped)
        + backend("c", c, models=mapped)
        + '[model_routing."sess"]\naffinity = "session"\n'
        + '[model_routing."pfx"]\naffinity = "prefix"\nprefix_messages = 1\n'
    )
    url = gateway(procs, tmp_path, config, *attached(a))
    # Concurrent requests spread over the three by outstanding requests.
    body = {**CHAT, "stream": False}
    answers = asyncio.run(_chats(url, [body] * 12))
    assert all(r.status_code == 200 for r in answers)
    spread = Counter(r.headers[BACKEND] for r in answers)
    assert set(spread) == {"engine", "b", "c"}, spread
    assert min(spread.values()) >= 2, spread
    # Idle backends tie: sequential requests go round.
    seen = [httpx.post(url + "/api/chat", json=body).headers[BACKEND] for _ in range(6)]
    assert Counter(seen) == {"engine": 2, "b": 2, "c": 2}, seen
    assert metric(url, "vllama_backend_requests_total", backend="b") >= 4
    # Session affinity: one session, one backend; sessions spread (engine lacks "sess").
    sessions: dict[str, set[str]] = {}
    for i in range(8):
        for _ in range(3):
            answer = httpx.post(
                url + "/v1/chat/completions",
                json={**CHAT, "model": "sess"},
                headers={"X-Session-Id": f"user-{i}"},
            )
            assert answer.status_code == 200, answer.text
            sessions.setdefault(f"user-{i}", set()).add(answer.headers[BACKEND])
    assert all(len(used) == 1 for used in sessions.values()), sessions
    assert set().union(*sessions.values()) == {"b", "c"}
    # Prefix affinity: the same leading message, the same backend, whatever follows.
    picked = set()
    for turn in range(5):
        messages = [
            {"role": "system", "content": "You are a pirate."},
            {"role": "user", "content": f"question {turn}"},
        ]
        answer = httpx.post(
            url + "/api/chat", json={"model": "pfx", "messages": messages, "stream": False}
        )
        assert answer.status_code == 200, answer.text
        picked.add(answer.headers[BACKEND])
    assert len(picked) == 1, picked
    # Leases end with the answer, however it ends: here, clients that leave mid-stream.
    long = {**CHAT, "options": {"num_predict": 200}}
    for path, payload in (("/api/chat", long), ("/v1/chat/completions", {**long, "stream": True})):
        for _ in range(3):
            with httpx.stream("POST", url + path, json=payload, timeout=30) as response:
                next(response.iter_raw())
    deadline = time.monotonic() + 5
    while sum(metric(url, "vllama_backend_outstanding", backend=n) for n in ("engine", "b", "c")):
        assert time.monotonic() < deadline, "a lease outlived its stream"
        time.sleep(0.05)


def test_breaker_opens_on_failures_and_closes_after_a_probe(
    tmp_path: Path, procs: list[Proc]
) -> None:
    (a, slow) = engines(procs, (), ("--stall-before-first-byte", "30"))
    down_port = free_port()
    down = f"http://127.0.0.1:{down_port}"
    config = (
        "breaker_failures = 2\nbreaker_cooldown = 2.0\n"  # passive signals only:
        + backend("down", down, health_path="")
        + backend("slow", slow, health_path="")
    )
    url = gateway(
        procs, tmp_path, config, *attached(a), env={"VLLAMA_UPSTREAM_FIRST_BYTE_TIMEOUT": "1"}
    )
    # Refused, or no first byte in time: the next backend answers, and says so.
    for path, body in (("/api/chat", CHAT), ("/v1/chat/completions", {**CHAT, "stream": True})):
        for _ in range(4):
            answer = httpx.post(url + path, json=body, timeout=30)
            assert answer.status_code == 200, answer.text
            assert answer.headers[BACKEND] == "engine"
    for name in ("down", "slow"):
        assert metric(url, "vllama_backend_breaker", backend=name, state="open") == 1
        assert metric(url, "vllama_backend_failures_total", backend=name) >= 2
    # Open: no traffic (at most one probe once the cool-down is over).
    started = time.monotonic()
    for _ in range(4):
        assert httpx.post(url + "/api/chat", json=CHAT).headers[BACKEND] == "engine"
    assert time.monotonic() - started < 1.5
    # The backend comes back: after the cool-down one probe closes the breaker.
    procs.append(fake_engine(down_port))
    wait_http(down + "/health", timeout=30)
    time.sleep(2.1)
    served = Counter(
        httpx.post(url + "/api/chat", json=CHAT, timeout=30).headers[BACKEND] for _ in range(6)
    )
    assert served["down"] >= 2, served
    assert metric(url, "vllama_backend_breaker", backend="down", state="closed") == 1


def test_fallback_to_ollama_in_its_native_api(tmp_path: Path, procs: list[Proc]) -> None:
    """The managed engine is still starting: Ollama, the fallback, serves untranslated."""
    ollama = fake_ollama(procs)
    config = (
        "[[backends]]\n"
        f'name = "ollama"\nkind = "ollama"\nurl = "{ollama}"\nrole = "fallback"\n'
        'models = { "fake" = "fake-ollama:latest", "only-here" = "fake-ollama:latest" }\n'
    )
    url = managed_gateway(procs, tmp_path, config, "--start-delay 60")
    # Ready (for a load balancer): every model has a backend up, here Ollama alone.
    wait_http(url + "/ready", timeout=10)
    ready = httpx.get(url + "/ready").json()
    assert ready["engine"] == "starting"
    assert ready["backends"] == {"engine": False, "ollama": True}
    body = {**CHAT, "options": {"num_predict": 4}, "keep_alive": "1m"}
    answer = httpx.post(url + "/api/chat", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.headers[BACKEND] == "ollama"
    assert answer.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in answer.text.splitlines()]
    assert "".join(line["message"]["content"] for line in lines) == "Ahoy from the fake"
    assert lines[-1]["done"] is True
    assert lines[-1]["eval_count"] == 4
    generated = httpx.post(
        url + "/api/generate", json={"model": "fake", "prompt": "hi", "stream": False}
    )
    assert generated.status_code == 200
    assert generated.json()["response"].startswith("Ahoy from")
    relayed = httpx.post(url + "/v1/chat/completions", json=CHAT)
    assert relayed.status_code == 200
    assert relayed.headers[BACKEND] == "ollama"
    assert relayed.json()["choices"][0]["message"]["content"].startswith("Ahoy")
    received = httpx.get(ollama + "/fake/requests").json()
    assert [r["path"] for r in received] == ["/api/chat", "/api/generate", "/v1/chat/completions"]
    # Untranslated: Ollama's own fields, with only the model renamed.
    assert received[0]["body"] == {**body, "model": "fake-ollama:latest"}
    assert received[2]["body"]["model"] == "fake-ollama:latest"
    # A model only the Ollama backend has is listed, and served by it.
    names = [m["name"] for m in httpx.get(url + "/api/tags").json()["models"]]
    assert "only-here" in names
    only = httpx.post(url + "/api/chat", json={**CHAT, "model": "only-here", "stream": False})
    assert (only.status_code, only.headers[BACKEND]) == (200, "ollama")


def test_5xx_before_streaming_falls_back(tmp_path: Path, procs: list[Proc]) -> None:
    (a,) = engines(procs, ())
    failing = fake_ollama(procs, "--status", "500", model="fake")
    config = (
        '[[backends]]\nname = "engine"\nkind = "managed"\nrole = "fallback"\n'
        "[[backends]]\n"
        f'name = "broken"\nkind = "ollama"\nurl = "{failing}"\nmodels = ["fake"]\n'
    )
    url = gateway(procs, tmp_path, config, *attached(a))
    for path, body in (("/api/chat", CHAT), ("/v1/chat/completions", CHAT)):
        answer = httpx.post(url + path, json=body, timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.headers[BACKEND] == "engine"
    assert [r["path"] for r in httpx.get(failing + "/fake/requests").json()] == [
        "/api/chat",
        "/v1/chat/completions",
    ]
    assert metric(url, "vllama_backend_failures_total", backend="broken") == 2


def test_no_retry_after_the_first_byte(tmp_path: Path, procs: list[Proc]) -> None:
    (a,) = engines(procs, ("--error-mid-stream", "3", "--token-delay", "0.01"))
    ollama = fake_ollama(procs, model="fake")
    config = (
        "[[backends]]\n"
        f'name = "ollama"\nkind = "ollama"\nurl = "{ollama}"\nrole = "fallback"\n'
        'models = ["fake"]\n'
    )
    url = gateway(procs, tmp_path, config, *attached(a))
    answer = httpx.post(url + "/api/chat", json=CHAT, timeout=30)
    assert answer.status_code == 200
    assert answer.headers[BACKEND] == "engine"
    lines = [json.loads(line) for line in answer.text.splitlines()]
    assert [line["done"] for line in lines[:-1]] == [False] * 3  # three tokens, then the cut
    assert set(lines[-1]) == {"error"}
    relayed = httpx.post(url + "/v1/chat/completions", json={**CHAT, "stream": True}, timeout=30)
    assert relayed.headers[BACKEND] == "engine"
    events = [e for e in relayed.text.split("\n\n") if e.startswith("data: ")]
    assert "error" in json.loads(events[-1].removeprefix("data: "))
    assert httpx.get(ollama + "/fake/requests").json() == []


def test_queue_limit_answers_503_busy(tmp_path: Path, procs: list[Proc]) -> None:
    (a,) = engines(procs, ("--token-delay", "0.1"))
    config = (
        '[[backends]]\nname = "engine"\nkind = "managed"\nmax_concurrency = 1\n'
        '[model_routing."*"]\nmax_queue = 1\n'
    )
    url = gateway(procs, tmp_path, config, *attached(a))
    body = {**CHAT, "stream": False, "options": {"num_predict": 8}}

    async def three() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=30) as client:
            first = asyncio.ensure_future(client.post(url + "/api/chat", json=body))
            await asyncio.sleep(0.3)
            second = asyncio.ensure_future(client.post(url + "/api/chat", json=body))
            await asyncio.sleep(0.2)
            third = await client.post(url + "/api/chat", json=body)
            openai = await client.post(url + "/v1/chat/completions", json=CHAT)
            return [await first, await second, third, openai]

    first, second, third, openai = asyncio.run(three())
    assert first.status_code == 200
    assert second.status_code == 200  # waited its turn
    assert third.status_code == 503
    assert third.json() == {"error": BUSY}
    assert int(third.headers["retry-after"]) >= 1
    assert openai.status_code == 503
    assert openai.json()["error"]["message"] == BUSY
    assert metric(url, "vllama_queue_rejected_total", model="fake:latest") == 2


def test_active_health_checks_take_a_backend_out_and_back(
    tmp_path: Path, procs: list[Proc]
) -> None:
    (a,) = engines(procs, ())
    port = free_port()
    procs.append(fake_engine(port, "--start-delay", "4"))  # /health 503 for 4 s
    config = "health_interval = 0.2\n" + backend("late", f"http://127.0.0.1:{port}")
    url = gateway(procs, tmp_path, config, *attached(a))

    def wait_health(value: float) -> None:
        deadline = time.monotonic() + 10
        while metric(url, "vllama_backend_healthy", backend="late") != value:
            assert time.monotonic() < deadline
            time.sleep(0.05)

    wait_health(0)
    for _ in range(4):
        assert httpx.post(url + "/api/chat", json=CHAT).headers[BACKEND] == "engine"
    assert metric(url, "vllama_backend_failures_total", backend="late") == 0  # never tried
    wait_health(1)
    served = Counter(httpx.post(url + "/api/chat", json=CHAT).headers[BACKEND] for _ in range(4))
    assert served == {"engine": 2, "late": 2}, served


def test_ready_needs_a_backend_up_for_every_model(tmp_path: Path, procs: list[Proc]) -> None:
    """503 while the managed engine starts and the Ollama fallback is down; then
    503 naming the model only Ollama serves; 200 once Ollama is up too."""
    port = free_port()
    config = (
        "health_interval = 0.2\n[[backends]]\n"
        f'name = "ollama"\nkind = "ollama"\nurl = "http://127.0.0.1:{port}"\n'
        'role = "fallback"\nmodels = { "fake" = "fake-ollama", "only-here" = "fake-ollama" }\n'
    )
    url = managed_gateway(procs, tmp_path, config, "--start-delay 3")
    starting = httpx.get(url + "/ready")
    assert starting.status_code == 503
    assert int(starting.headers["retry-after"]) >= 1
    assert starting.json()["backends"] == {"engine": False, "ollama": False}
    assert len(starting.json()["unserved"]) == 2
    # The engine is up; the model only Ollama has is not served yet.
    deadline = time.monotonic() + 30
    while (answer := httpx.get(url + "/ready")).json()["backends"]["engine"] is False:
        assert answer.status_code == 503
        assert time.monotonic() < deadline, answer.text
        time.sleep(0.1)
    assert answer.status_code == 503
    assert answer.json()["unserved"] == ["only-here"]
    # Ollama comes up on its address: the next health check makes the gateway ready.
    argv = [sys.executable, str(FAKE_OLLAMA), "--port", str(port), "--model", "fake-ollama"]
    procs.append(Proc(argv).start())
    wait_http(url + "/ready", timeout=10)
    assert httpx.get(url + "/ready").json() == {
        "status": "ready",
        "engine": "ready",
        "backends": {"engine": True, "ollama": True},
    }


def test_model_not_found_passes_over_and_only_the_last_404_is_answered(
    tmp_path: Path, procs: list[Proc]
) -> None:
    """A backend that lacks the model says 404 (vLLM's or Ollama's words) before
    the first byte: the next backend serving it is tried, and the 404 is not
    held against the backend. When all lack it, the client gets the last 404."""
    a, other = engines(procs, (), ())  # the second serves "fake" only: "ghost" is a 404
    ollama = fake_ollama(procs, model="not-it")
    names = {"fake": "ghost", "ghost": "ghost"}
    config = (
        '[[backends]]\nname = "engine"\nkind = "managed"\nrole = "fallback"\n'
        + backend("vllm-without", other, models=names)
        + "[[backends]]\n"
        + f'name = "ollama-without"\nkind = "ollama"\nurl = "{ollama}"\n'
        + 'models = { "fake" = "ghost", "ghost" = "ghost" }\n'
    )
    url = gateway(procs, tmp_path, config, *attached(a))
    paths = ("/api/chat", "/v1/chat/completions", "/api/generate")
    for path in paths:
        body = CHAT if path != "/api/generate" else {"model": "fake", "prompt": "hi"}
        answer = httpx.post(url + path, json=body, timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.headers[BACKEND] == "engine"
    asked = [r["path"] for r in httpx.get(ollama + "/fake/requests").json()]
    assert asked == list(paths)  # each was tried first, and passed over
    for name in ("vllm-without", "ollama-without"):
        assert metric(url, "vllama_backend_failures_total", backend=name) == 0
        assert metric(url, "vllama_backend_breaker", backend=name, state="closed") == 1
    # Nobody has "ghost" (the engine lists only "fake"): the last 404, in each dialect.
    ollama_404 = httpx.post(url + "/api/chat", json={**CHAT, "model": "ghost"})
    assert ollama_404.status_code == 404, ollama_404.text
    assert set(ollama_404.json()) == {"error"}
    assert "ghost" in ollama_404.json()["error"]
    assert ollama_404.headers.get(BACKEND, "vllm-without") in {"vllm-without", "ollama-without"}
    openai_404 = httpx.post(url + "/v1/chat/completions", json={**CHAT, "model": "ghost"})
    assert openai_404.status_code == 404, openai_404.text
    assert "ghost" in openai_404.json()["error"]["message"]
    assert openai_404.headers[BACKEND] in {"vllm-without", "ollama-without"}
    assert len(httpx.get(ollama + "/fake/requests").json()) == len(paths) + 2
