"""Nothing lost, nothing hangs: engine crashes, disconnect storms, stalls and
graceful shutdown, end to end through `vllama serve` and a faulty fake engine."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import time
from pathlib import Path

import httpx
import psutil
import pytest

from tests.integration.test_routing import fake_ollama, managed_gateway
from tests.procs import Proc, managed_fake, wait_http

pytestmark = pytest.mark.slow

CHAT = {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}


def _gauge(text: str, name: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


def _wait_engine_up(url: str, timeout: float = 30) -> None:
    """/ready is 200 as soon as any backend serves every model (the fallback
    too); these tests need the managed engine itself."""
    deadline = time.monotonic() + timeout
    while httpx.get(url + "/ready").json()["backends"].get("engine") is not True:
        assert time.monotonic() < deadline, "the engine did not come up"
        time.sleep(0.2)


async def _stream_lines(client: httpx.AsyncClient, url: str, body: dict[str, object]) -> list[dict]:
    async with client.stream("POST", url, json=body) as response:
        assert response.status_code == 200
        return [json.loads(line) async for line in response.aiter_lines()]


def test_engine_crash_during_32_streams(tmp_path: Path, procs: list[Proc]) -> None:
    marker = tmp_path / "crashed-once"
    proc, url = managed_fake(tmp_path, f"--crash-after 3 --crash-marker {marker} --token-delay 0.1")
    procs.append(proc)
    wait_http(url + "/ready", timeout=30, proc=proc.popen)
    body = {**CHAT, "options": {"num_predict": 200}}

    async def storm() -> list[list[dict]]:
        async with httpx.AsyncClient(timeout=30) as client:
            return await asyncio.gather(
                *(_stream_lines(client, url + "/api/chat", body) for _ in range(32))
            )

    started = time.monotonic()
    streams = asyncio.run(storm())
    assert time.monotonic() - started < 20, "streams hung after the engine died"
    assert marker.exists()
    for lines in streams:
        assert set(lines[-1]) == {"error"}, lines[-1]
        assert all(line.get("done") is False for line in lines[:-1])
    down = httpx.post(url + "/api/chat", json=CHAT)
    if down.status_code == 503:  # not yet restarted: the dialect's 503
        assert int(down.headers["retry-after"]) >= 1
    deadline = time.monotonic() + 15
    while _gauge(httpx.get(url + "/metrics").text, "vllama_engine_restarts_total") < 1:
        assert time.monotonic() < deadline, "the supervisor never restarted the engine"
        time.sleep(0.1)
    wait_http(url + "/ready", timeout=30, proc=proc.popen)
    answer = httpx.post(url + "/api/chat", json={**CHAT, "stream": False}, timeout=30)
    assert answer.status_code == 200
    assert answer.json()["done"] is True
    metrics = httpx.get(url + "/metrics").text
    assert _gauge(metrics, "vllama_engine_restarts_total") == 1


def test_disconnect_storm_leaves_nothing_behind(tmp_path: Path, procs: list[Proc]) -> None:
    proc, url = managed_fake(tmp_path, "--token-delay 0.002")
    procs.append(proc)
    wait_http(url + "/ready", timeout=30, proc=proc.popen)
    engine = proc.engine_url()
    assert proc.popen is not None
    gateway = psutil.Process(proc.popen.pid)
    rng = random.Random(7)

    async def vanish(client: httpx.AsyncClient, path: str, keep: int) -> None:
        body = (
            {**CHAT, "options": {"num_predict": 400}}
            if path == "/api/chat"
            else {**CHAT, "stream": True, "max_tokens": 400}
        )
        async with client.stream("POST", url + path, json=body) as response:
            async for _ in response.aiter_raw():
                keep -= 1
                if keep <= 0:
                    break

    async def run(total: int) -> None:
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=0)
        async with httpx.AsyncClient(timeout=30, limits=limits) as client:
            gate = asyncio.Semaphore(48)

            async def one(i: int) -> None:
                async with gate:
                    path = "/api/chat" if i % 2 else "/v1/chat/completions"
                    await vanish(client, path, rng.randint(1, 30))

            await asyncio.gather(*(one(i) for i in range(total)))

    asyncio.run(run(100))  # warm up: pools, caches, lazily created objects
    time.sleep(1)
    baseline_rss = gateway.memory_info().rss
    before = httpx.get(url + "/metrics").text
    assert "vllama_asyncio_tasks " in before
    baseline_tasks = _gauge(before, "vllama_asyncio_tasks")
    assert baseline_tasks > 0
    asyncio.run(run(1000))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if _gauge(httpx.get(engine + "/metrics").text, "vllm:num_requests_running") == 0:
            break
        time.sleep(0.1)
    assert _gauge(httpx.get(engine + "/metrics").text, "vllm:num_requests_running") == 0
    time.sleep(0.5)
    tasks = _gauge(httpx.get(url + "/metrics").text, "vllama_asyncio_tasks")
    assert tasks <= baseline_tasks + 2, (baseline_tasks, tasks)
    client_side = [
        c for c in gateway.net_connections("tcp") if c.laddr.port == int(url.rsplit(":", 1)[1])
    ]
    assert len([c for c in client_side if c.status == psutil.CONN_ESTABLISHED]) <= 1
    growth = gateway.memory_info().rss / baseline_rss - 1
    assert growth < 0.05, f"RSS grew {growth:.1%}"


def test_stalls_are_cut_off_and_health_stays_fast(tmp_path: Path, procs: list[Proc]) -> None:
    proc, url = managed_fake(
        tmp_path,
        "--stall-after 2:60 --token-delay 0.01",
        VLLAMA_UPSTREAM_IDLE_TIMEOUT="1.5",
    )
    procs.append(proc)
    wait_http(url + "/ready", timeout=30, proc=proc.popen)

    async def scenario() -> tuple[list[list[dict]], list[float]]:
        async with httpx.AsyncClient(timeout=30) as client:
            streams = asyncio.gather(
                *(_stream_lines(client, url + "/api/chat", CHAT) for _ in range(32))
            )
            await asyncio.sleep(0.5)
            probes = []
            for _ in range(10):
                started = time.perf_counter()
                response = await client.get(url + "/health")
                probes.append(time.perf_counter() - started)
                assert response.status_code == 200
                await asyncio.sleep(0.05)
            return await streams, probes

    started = time.monotonic()
    streams, probes = asyncio.run(scenario())
    assert time.monotonic() - started < 10
    assert max(probes) < 0.05, probes
    for lines in streams:
        assert len(lines) == 3  # two tokens, then the cut
        assert "stalled" in lines[-1]["error"]


def test_sigterm_lets_inflight_streams_finish(tmp_path: Path, procs: list[Proc]) -> None:
    proc, url = managed_fake(tmp_path, "--token-delay 0.05")
    procs.append(proc)
    wait_http(url + "/ready", timeout=30, proc=proc.popen)
    assert proc.popen is not None
    body = {**CHAT, "options": {"num_predict": 40}}

    async def scenario() -> list[list[dict]]:
        async with httpx.AsyncClient(timeout=30) as client:
            streams = asyncio.gather(
                *(_stream_lines(client, url + "/api/chat", body) for _ in range(8))
            )
            await asyncio.sleep(0.5)
            proc.popen.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
            await asyncio.sleep(0.3)
            with pytest.raises(httpx.ConnectError):
                await client.get(url + "/health")
            return await streams

    streams = asyncio.run(scenario())
    for lines in streams:
        assert lines[-1]["done"] is True
        assert lines[-1]["eval_count"] == 40
    assert proc.popen.wait(30) == 0


def test_engine_crash_with_a_fallback_backend(tmp_path: Path, procs: list[Proc]) -> None:
    """Streams under way end in-band; requests arriving while the engine restarts
    (no byte sent yet) are served by the Ollama fallback."""
    ollama = fake_ollama(procs)
    marker = tmp_path / "crashed-once"
    config = (
        '[[backends]]\nname = "ollama"\nkind = "ollama"\n'
        f'url = "{ollama}"\nrole = "fallback"\nmodels = {{ "fake" = "fake-ollama:latest" }}\n'
    )
    flags = f"--start-delay 3 --crash-after 2 --crash-marker {marker} --token-delay 0.1"
    url = managed_gateway(procs, tmp_path, config, flags)
    _wait_engine_up(url)
    body = {**CHAT, "options": {"num_predict": 200}}

    async def storm() -> list[list[dict]]:
        async with httpx.AsyncClient(timeout=30) as client:
            return await asyncio.gather(
                *(_stream_lines(client, url + "/api/chat", body) for _ in range(32))
            )

    streams = asyncio.run(storm())
    assert marker.exists()
    assert all(set(lines[-1]) == {"error"} for lines in streams)
    served_by = []
    for _ in range(4):
        answer = httpx.post(url + "/api/chat", json={**CHAT, "stream": False}, timeout=30)
        assert answer.status_code == 200, answer.text
        assert answer.json()["done"] is True
        served_by.append(answer.headers["x-vllama-backend"])
    assert "ollama" in served_by
    _wait_engine_up(url)
    after = httpx.post(url + "/api/chat", json={**CHAT, "stream": False}, timeout=30)
    assert after.headers["x-vllama-backend"] == "engine"
