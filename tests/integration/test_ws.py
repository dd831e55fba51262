"""``/api/ws``: Ollama chat over a real WebSocket (the ``websockets`` client)
to `vllama serve` managing the fake engine, with keys required."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tests.admin import ADMIN, bearer, counted_usage, new_key, usage_of
from tests.procs import Proc, managed_fake, wait_http
from vllama.server.routes.ws import MAX_PENDING

KEYED = {"VLLAMA_AUTH": "on", "VLLAMA_ADMIN_KEY": ADMIN, "VLLAMA_USAGE_FLUSH_INTERVAL": "3600"}
CHAT = {"model": "fake", "messages": [{"role": "user", "content": "one two three"}]}


@pytest.fixture
def serve(procs: list[Proc], tmp_path: Path) -> Callable[..., str]:
    def run(flags: str = "", **env: str) -> str:
        proc, url = managed_fake(tmp_path, flags, **env)
        procs.append(proc)
        wait_http(url + "/ready", timeout=30, proc=proc.popen)
        return url

    return run


def socket(url: str, headers: dict[str, str] | None = None, query: str = "") -> ClientConnection:
    address = url.replace("http://", "ws://") + "/api/ws" + query
    return connect(address, additional_headers=headers, proxy=None, open_timeout=10)


def answer_of(ws: ClientConnection, request: dict[str, Any] | str) -> list[dict[str, Any]]:
    """The frames of one request, up to the last one (done, or an error)."""
    ws.send(request if isinstance(request, str) else json.dumps(request))
    frames: list[dict[str, Any]] = []
    while True:
        frame = ws.recv(timeout=30)
        assert isinstance(frame, str)  # text frames only
        frames.append(json.loads(frame))
        if frames[-1].get("done") or "error" in frames[-1]:
            return frames


def test_the_handshake_needs_a_key_in_a_header(serve: Callable[..., str]) -> None:
    url = serve(**KEYED)
    _, key = new_key(url)
    wrong = "vll-" + secrets.token_urlsafe(32)
    for headers, query in (
        (None, ""),
        (bearer(wrong), ""),
        ({"x-api-key": wrong}, ""),
        (None, f"?api_key={key}"),  # a query parameter is not a place for keys
    ):
        with pytest.raises(InvalidStatus) as refused:
            socket(url, headers, query).close()
        assert refused.value.response.status_code == 403
        assert key.encode() not in (refused.value.response.body or b"")
    with pytest.raises(InvalidStatus) as refused:  # browsers apply no CORS to sockets
        socket(url, {**bearer(key), "origin": "https://evil.example.com"}).close()
    assert refused.value.response.status_code == 403
    for headers in (bearer(key), {"x-api-key": key, "origin": "http://localhost:5173"}):
        with socket(url, headers) as ws:
            assert answer_of(ws, {**CHAT, "options": {"num_predict": 2}})[-1]["done"] is True


def test_frames_are_the_objects_of_api_chat_and_usage_is_per_request(
    serve: Callable[..., str],
) -> None:
    url = serve("--token-delay 0.01", **KEYED)
    key_id, key = new_key(url)
    request = {**CHAT, "options": {"num_predict": 5}}
    lines = httpx.post(url + "/api/chat", json=request, headers=bearer(key), timeout=30)
    over_http = [json.loads(line) for line in lines.text.splitlines()]
    with socket(url, bearer(key)) as ws:
        frames = answer_of(ws, request)
        assert [set(f) for f in frames] == [set(o) for o in over_http]
        assert [f["message"] for f in frames] == [o["message"] for o in over_http]
        assert [f["done"] for f in frames] == [False] * 5 + [True]
        assert (frames[-1]["prompt_eval_count"], frames[-1]["eval_count"]) == (3, 5)

        # Errors are frames, and the connection serves the next request.
        [bad] = answer_of(ws, "{not json")
        assert list(bad) == ["error"]
        assert bad["error"].startswith("invalid JSON")
        missing = answer_of(ws, {**CHAT, "model": "nope"})
        assert missing == [{"error": "model 'nope' not found"}]
        whole = answer_of(ws, {**request, "stream": False})
        assert len(whole) == 1
        assert whole[0]["message"]["content"] == "".join(f["message"]["content"] for f in frames)
        assert whole[0]["eval_count"] == 5
    assert usage_of(url, key_id) == (3, 9, 15)  # HTTP once, the socket twice


def test_rate_limits_apply_per_request_on_one_connection(serve: Callable[..., str]) -> None:
    url = serve(**KEYED)
    _, key = new_key(url, rpm=2)
    short = {**CHAT, "options": {"num_predict": 1}}
    with socket(url, bearer(key)) as ws:
        assert answer_of(ws, short)[-1]["done"] is True  # admitted with the handshake
        assert answer_of(ws, short)[-1]["done"] is True
        [refused] = answer_of(ws, short)
        assert refused["error"].startswith("request rate limit reached")


def test_a_client_that_closes_mid_answer_is_charged_what_was_made(
    serve: Callable[..., str],
) -> None:
    url = serve("--token-delay 0.02", **KEYED)
    key_id, key = new_key(url)
    with socket(url, bearer(key)) as ws:
        ws.send(json.dumps({**CHAT, "options": {"num_predict": 300}}))
        for _ in range(3):
            assert json.loads(ws.recv(timeout=30))["done"] is False
    requests, _, completion = counted_usage(url, key_id)
    assert requests == 1
    assert 3 <= completion < 300


def test_a_socket_is_bounded_in_size_and_in_waiting_requests(serve: Callable[..., str]) -> None:
    url = serve("--token-delay 0.05", VLLAMA_MAX_BODY_BYTES="2048", **KEYED)
    _, key = new_key(url)
    with socket(url, bearer(key)) as ws:
        huge = {**CHAT, "messages": [{"role": "user", "content": "x" * 3000}]}
        assert answer_of(ws, huge) == [{"error": "request body larger than 2048 bytes"}]
        ws.send(json.dumps({**CHAT, "options": {"num_predict": 300}}))
        assert json.loads(ws.recv(timeout=30))["done"] is False
        for _ in range(MAX_PENDING + 1):
            ws.send(json.dumps(CHAT))
        with pytest.raises(ConnectionClosed) as closed:
            drain(ws)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == 1008


def drain(ws: ClientConnection) -> None:
    """Frames until the server closes (bounded: a 300-token answer, then more)."""
    for _ in range(10_000):
        ws.recv(timeout=30)
