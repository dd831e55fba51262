"""API keys, limits, usage, trusted fronts and CORS, end to end: `vllama serve`
managing the fake engine, talked to over real sockets."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import ollama
import openai
import pytest

from tests.admin import ADMIN, bearer, new_key, usage_of
from tests.pg import private_schema
from tests.procs import VLLAMA, Proc, managed_fake, wait_http

CHAT = {"model": "fake", "messages": [{"role": "user", "content": "hi"}]}


def start(home: Path, *args: str, flags: str = "", **env: str) -> tuple[Proc, str]:
    proc, url = managed_fake(home, flags, args=args, **env)
    wait_http(url + "/ready", timeout=30, proc=proc.popen)
    return proc, url


@pytest.fixture
def serve(procs: list[Proc], tmp_path: Path) -> Callable[..., tuple[Proc, str]]:
    def run(*args: str, home: Path | None = None, **env: str) -> tuple[Proc, str]:
        proc, url = start(home or tmp_path, *args, **env)
        procs.append(proc)
        return proc, url

    return run


KEYED = {"VLLAMA_AUTH": "on", "VLLAMA_ADMIN_KEY": ADMIN}

# (method, path, body, dialect)
FAMILIES: list[tuple[str, str, dict[str, Any] | None, str]] = [
    ("POST", "/api/chat", {**CHAT, "stream": False}, "ollama"),
    ("POST", "/api/generate", {"model": "fake", "prompt": "hi", "stream": False}, "ollama"),
    ("GET", "/api/tags", None, "ollama"),
    ("POST", "/api/show", {"model": "fake"}, "ollama"),
    ("POST", "/v1/chat/completions", CHAT, "openai"),
    ("POST", "/v1/completions", {"model": "fake", "prompt": "hi"}, "openai"),
    ("GET", "/v1/models", None, "openai"),
    ("GET", "/metrics", None, "ollama"),
]


def call(url: str, method: str, path: str, body: Any, headers: dict[str, str]) -> httpx.Response:
    return httpx.request(method, url + path, json=body, headers=headers, timeout=30)


def assert_refused(response: httpx.Response, status: int, dialect: str, *secrets_: str) -> None:
    assert response.status_code == status, (response.request.url, response.text)
    body = response.json()
    if dialect == "openai":
        assert set(body["error"]) == {"message", "type", "param", "code"}
        kind = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}
        assert body["error"]["type"] == kind[status]
    else:
        assert set(body) == {"error"}
        assert isinstance(body["error"], str)
    for secret in secrets_:
        assert secret not in response.text
    if status == 401:
        assert response.headers["www-authenticate"] == "Bearer"
    if status == 429:
        assert int(response.headers["retry-after"]) >= 1


def test_every_route_family_needs_a_valid_key(
    serve: Callable[..., tuple[Proc, str]],
) -> None:
    _, url = serve(**KEYED)
    _, right = new_key(url)
    revoked_id, revoked = new_key(url)
    assert httpx.delete(url + f"/admin/keys/{revoked_id}", headers=bearer(ADMIN)).is_success
    _, expired = new_key(url, expires="2020-01-01T00:00:00")
    wrong = "vll-" + secrets.token_urlsafe(32)
    for path in ("/", "/health", "/ready"):
        assert httpx.get(url + path).status_code == 200
    for method, path, body, dialect in FAMILIES:
        for headers in ({}, bearer(wrong), bearer(revoked), bearer(expired), {"x-api-key": wrong}):
            found = call(url, method, path, body, headers)
            assert_refused(found, 401, dialect, wrong, revoked, expired)
        for headers in (bearer(right), {"x-api-key": right}):
            answer = call(url, method, path, body, headers)
            assert answer.status_code == 200, (path, answer.text)
    for headers in ({}, bearer(right), bearer(wrong)):
        assert_refused(httpx.get(url + "/admin/keys", headers=headers), 401, "ollama", right)
    listing = httpx.get(url + "/admin/keys", headers=bearer(ADMIN))
    assert listing.status_code == 200
    assert right not in listing.text
    assert_official_clients(url, right, wrong)
    assert {k["revoked_at"] is not None for k in listing.json()["keys"]} == {True, False}


def assert_official_clients(url: str, right: str, wrong: str) -> None:
    """The openai SDK sends its api_key, the ollama client OLLAMA_API_KEY, as Bearer."""
    with openai.OpenAI(base_url=url + "/v1", api_key=right, max_retries=0) as good:
        assert good.chat.completions.create(**CHAT).usage is not None
    with (
        openai.OpenAI(base_url=url + "/v1", api_key=wrong, max_retries=0) as bad,
        pytest.raises(openai.AuthenticationError),
    ):
        bad.models.list()
    with pytest.MonkeyPatch.context() as env:
        env.setenv("OLLAMA_API_KEY", right)
        client = ollama.Client(host=url)
        env.setenv("OLLAMA_API_KEY", wrong)
        stranger = ollama.Client(host=url)
    try:
        assert client.chat(**CHAT).done
        with pytest.raises(ollama.ResponseError) as refused:
            stranger.list()
        assert refused.value.status_code == 401
    finally:
        client.close()
        stranger.close()


def test_limits_answer_429_with_retry_after(serve: Callable[..., tuple[Proc, str]]) -> None:
    _, url = serve(flags="--token-delay 0.05", **KEYED)
    _, rpm = new_key(url, rpm=2)
    for _ in range(2):
        assert httpx.get(url + "/api/tags", headers=bearer(rpm)).status_code == 200
    assert_refused(httpx.get(url + "/api/tags", headers=bearer(rpm)), 429, "ollama")
    assert_refused(httpx.get(url + "/v1/models", headers=bearer(rpm)), 429, "openai")

    _, tpm = new_key(url, tpm=20)  # one chat reports 1 prompt + 16 output tokens
    small = {**CHAT, "stream": False, "options": {"num_predict": 16}}
    first = httpx.post(url + "/api/chat", json=small, headers=bearer(tpm), timeout=30).json()
    assert first["prompt_eval_count"] + first["eval_count"] == 17
    assert httpx.post(url + "/api/chat", json=small, headers=bearer(tpm), timeout=30).is_success
    refused = httpx.post(url + "/v1/chat/completions", json=CHAT, headers=bearer(tpm))
    assert_refused(refused, 429, "openai")
    assert int(refused.headers["retry-after"]) > 30  # 14 tokens overdrawn at 1/3 per second

    _, one = new_key(url, max_concurrency=1)
    with httpx.stream("POST", url + "/api/chat", json=CHAT, headers=bearer(one)) as streaming:
        lines = streaming.iter_lines()  # kept: a dropped iterator closes the stream
        next(lines)
        assert_refused(httpx.post(url + "/api/chat", json=CHAT, headers=bearer(one)), 429, "ollama")
    assert httpx.post(url + "/api/chat", json=CHAT, headers=bearer(one), timeout=30).is_success


def test_model_allow_list_is_403_in_the_callers_dialect(
    serve: Callable[..., tuple[Proc, str]],
) -> None:
    _, url = serve(**KEYED, VLLAMA_MAX_MESSAGES="2", VLLAMA_MAX_TOKENS_LIMIT="100")
    _, other = new_key(url, models=["other:7b"])
    _, fake = new_key(url, models=["FAKE"])
    assert_refused(httpx.post(url + "/api/chat", json=CHAT, headers=bearer(other)), 403, "ollama")
    refused = httpx.post(url + "/v1/chat/completions", json=CHAT, headers=bearer(other))
    assert_refused(refused, 403, "openai")
    assert httpx.post(url + "/v1/chat/completions", json=CHAT, headers=bearer(fake)).is_success
    assert httpx.get(url + "/api/tags", headers=bearer(other)).json()["models"] == []
    assert httpx.get(url + "/v1/models", headers=bearer(other)).json()["data"] == []
    assert [m["id"] for m in httpx.get(url + "/v1/models", headers=bearer(fake)).json()["data"]]
    shown = httpx.post(url + "/api/show", json={"model": "fake"}, headers=bearer(other))
    assert_refused(shown, 403, "ollama")
    assert_refused(httpx.get(url + "/v1/models/fake", headers=bearer(other)), 403, "openai")
    for method, path in (("POST", "/api/copy"), ("DELETE", "/api/delete"), ("POST", "/api/pull")):
        refused = httpx.request(method, url + path, json={"model": "x"}, headers=bearer(fake))
        assert_refused(refused, 403, "ollama")
        as_admin = httpx.request(method, url + path, json={"model": "x"}, headers=bearer(ADMIN))
        assert as_admin.status_code != 403
    many = {**CHAT, "messages": CHAT["messages"] * 3}
    assert httpx.post(url + "/api/chat", json=many, headers=bearer(fake)).status_code == 400
    greedy = {**CHAT, "max_tokens": 101}
    answer = httpx.post(url + "/v1/chat/completions", json=greedy, headers=bearer(fake))
    assert answer.status_code == 400
    assert answer.json()["error"]["param"] == "max_tokens"


def test_usage_equals_the_engines_tokens_and_survives_shutdown(
    tmp_path: Path, serve: Callable[..., tuple[Proc, str]]
) -> None:
    proc, url = serve(**KEYED, VLLAMA_USAGE_FLUSH_INTERVAL="3600")
    key_id, key = new_key(url)
    h = bearer(key)
    prompt = completion = 0

    lines = httpx.post(url + "/api/chat", json=CHAT, headers=h, timeout=30).text.splitlines()
    last = json.loads(lines[-1])
    prompt, completion = prompt + last["prompt_eval_count"], completion + last["eval_count"]
    body = {"model": "fake", "prompt": "one two three", "stream": False}
    answer = httpx.post(url + "/api/generate", json=body, headers=h, timeout=30).json()
    prompt, completion = prompt + answer["prompt_eval_count"], completion + answer["eval_count"]
    plain = {**CHAT, "max_tokens": 5}
    usage = httpx.post(url + "/v1/chat/completions", json=plain, headers=h).json()["usage"]
    prompt, completion = prompt + usage["prompt_tokens"], completion + usage["completion_tokens"]
    streamed = {**CHAT, "stream": True, "stream_options": {"include_usage": True}}
    text = httpx.post(url + "/v1/chat/completions", json=streamed, headers=h, timeout=30).text
    events = [e.removeprefix("data: ") for e in text.split("\n\n") if e.startswith("data: {")]
    usage = json.loads(events[-1])["usage"]
    prompt, completion = prompt + usage["prompt_tokens"], completion + usage["completion_tokens"]
    embedded = {"model": "fake", "input": ["a b c", "d e"]}
    usage = httpx.post(url + "/v1/embeddings", json=embedded, headers=h).json()["usage"]
    prompt += usage["prompt_tokens"]
    assert prompt > 0
    assert completion > 0

    assert usage_of(url, key_id) == (5, prompt, completion)
    assert proc.stop() == 0  # graceful: the last batch is written now
    listing = subprocess.run(
        [str(VLLAMA), "usage", "--json", "--home", str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    rows = [r for r in json.loads(listing.stdout) if r["key_id"] == key_id]
    assert sum(r["requests"] for r in rows) == 5
    assert sum(r["prompt_tokens"] for r in rows) == prompt
    assert sum(r["completion_tokens"] for r in rows) == completion
    assert {r["model"] for r in rows} == {"fake:latest"}  # the catalogue's name


def cli(*args: str) -> str:
    done = subprocess.run([str(VLLAMA), *args], capture_output=True, text=True, check=True)
    return done.stdout


def eventually(check: Callable[[], bool], within: float) -> float:
    started = time.monotonic()
    while not check():
        assert time.monotonic() - started < within, f"not within {within} s"
        time.sleep(0.05)
    return time.monotonic() - started


def test_cli_keys_reach_a_running_gateway_within_a_second(
    tmp_path: Path, serve: Callable[..., tuple[Proc, str]]
) -> None:
    _, url = serve(VLLAMA_AUTH="on")
    home = ("--home", str(tmp_path))
    secret = cli("keys", "create", "--name", "cli", "--rpm", "100", *home).strip()
    assert secret.startswith("vll-")

    def status() -> int:
        return httpx.get(url + "/api/tags", headers=bearer(secret)).status_code

    eventually(lambda: status() == 200, within=1.5)
    [listed] = json.loads(cli("keys", "list", "--json", *home))
    assert secret not in json.dumps(listed)
    assert listed["rpm"] == 100
    rotated = json.loads(cli("keys", "rotate", listed["id"], "--json", *home))["key"]
    eventually(lambda: status() == 401, within=1.5)
    secret = rotated
    eventually(lambda: status() == 200, within=1.5)
    cli("keys", "revoke", listed["id"], *home)
    assert eventually(lambda: status() == 401, within=1.5) < 1.5


def test_trusted_front_identity_needs_the_secret(serve: Callable[..., tuple[Proc, str]]) -> None:
    front = "front-" + secrets.token_hex(16)
    _, url = serve(
        **KEYED,
        VLLAMA_TRUSTED_FRONT_HEADER="X-Vllama-User",
        VLLAMA_TRUSTED_FRONT_SECRET=front,
        VLLAMA_FRONT_RPM="2",
    )
    alice = {"x-vllama-user": "alice", "x-vllama-front-secret": front}
    for headers in ({"x-vllama-user": "alice"}, {**alice, "x-vllama-front-secret": "x" * 40}):
        refused = httpx.post(url + "/api/chat", json=CHAT, headers=headers)
        assert_refused(refused, 401, "ollama", front)
    assert httpx.post(url + "/api/chat", json={**CHAT, "stream": False}, headers=alice).is_success
    assert httpx.get(url + "/v1/models", headers=alice).is_success
    assert_refused(httpx.get(url + "/v1/models", headers=alice), 429, "openai")  # per identity
    bob = {**alice, "x-vllama-user": "bob"}
    assert httpx.get(url + "/v1/models", headers=bob).is_success
    assert usage_of(url, "front:alice")[0] == 1


def test_auth_follows_the_bind_address_and_cors_the_origins(
    tmp_path: Path, serve: Callable[..., tuple[Proc, str]]
) -> None:
    _, local = serve(home=tmp_path / "a", OLLAMA_ORIGINS="https://app.example.com")
    assert httpx.get(local + "/api/tags").status_code == 200  # loopback: open
    assert httpx.get(local + "/api/tags", headers=bearer("unused")).status_code == 200
    assert_refused(httpx.get(local + "/admin/keys"), 403, "ollama")  # no admin key set
    for origin, allowed in (
        ("http://localhost:5173", True),
        ("https://app.example.com", True),
        ("vscode-webview://abc", True),
        ("https://evil.example.com", False),
    ):
        preflight = httpx.options(
            local + "/v1/chat/completions",
            headers={
                "origin": origin,
                "access-control-request-method": "POST",
                "access-control-request-headers": "authorization, content-type",
            },
        )
        assert (preflight.status_code == 200) is allowed, origin
        simple = httpx.get(local + "/api/tags", headers={"origin": origin})
        assert (simple.headers.get("access-control-allow-origin") == origin) is allowed
    _, wide = serve("--host", "0.0.0.0", home=tmp_path / "b")
    assert_refused(httpx.get(wide + "/api/tags"), 401, "ollama")  # beyond loopback: keys
    assert httpx.get(wide + "/health").status_code == 200


def test_secrets_never_reach_logs_or_error_bodies(serve: Callable[..., tuple[Proc, str]]) -> None:
    front = "front-" + secrets.token_hex(16)
    proc, url = serve(
        **KEYED,
        VLLAMA_LOG_LEVEL="debug",
        VLLAMA_TRUSTED_FRONT_HEADER="x-vllama-user",
        VLLAMA_TRUSTED_FRONT_SECRET=front,
    )
    key_id, key = new_key(url, rpm=1)
    rotated = httpx.post(url + f"/admin/keys/{key_id}/rotate", headers=bearer(ADMIN)).json()["key"]
    wrong = "vll-" + secrets.token_urlsafe(32)
    known = [ADMIN, front, key, rotated, wrong]
    bodies: list[str] = []
    for headers in (
        bearer(key),
        bearer(rotated),
        bearer(rotated),  # 429
        bearer(wrong),
        {"x-api-key": wrong},
        {"x-vllama-user": "eve", "x-vllama-front-secret": wrong},
    ):
        for path, body in (("/api/chat", CHAT), ("/v1/chat/completions", {**CHAT, "n": "x"})):
            bodies.append(httpx.post(url + path, json=body, headers=headers, timeout=30).text)
    bodies.append(httpx.get(url + "/admin/keys", headers=bearer(wrong)).text)
    bodies.append(httpx.get(url + "/admin/keys", headers=bearer(ADMIN)).text)
    bodies.append(httpx.get(url + "/metrics", headers=bearer(ADMIN)).text)
    proc.stop()
    assert "401" in proc.output  # the access log did see the refusals
    for secret in known:
        assert secret not in proc.output
        for body in bodies:
            assert secret not in body


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    async for url in private_schema():
        yield url


async def test_replicas_share_keys_and_usage_through_postgresql(
    tmp_path: Path, pg_url: str, serve: Callable[..., tuple[Proc, str]]
) -> None:
    shared = {**KEYED, "VLLAMA_DATABASE_URL": pg_url, "VLLAMA_AUTH_REFRESH_INTERVAL": "0.3"}
    results: dict[str, tuple[Proc, str]] = {}

    def boot(name: str) -> None:
        results[name] = serve(home=tmp_path / name, **shared)

    threads = [threading.Thread(target=boot, args=(n,)) for n in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    (proc_a, a), (proc_b, b) = results["a"], results["b"]
    key_id, key = new_key(a)

    def status(url: str) -> int:
        return httpx.get(url + "/api/tags", headers=bearer(key)).status_code

    eventually(lambda: status(b) == 200, within=1.5)
    for url in (a, b):
        assert httpx.post(url + "/v1/chat/completions", json=CHAT, headers=bearer(key)).is_success
    assert httpx.delete(a + f"/admin/keys/{key_id}", headers=bearer(ADMIN)).is_success
    assert status(a) == 401
    eventually(lambda: status(b) == 401, within=1.5)
    proc_a.stop()
    proc_b.stop()
    out = cli("usage", "--json", "--database-url", pg_url)
    [row] = [r for r in json.loads(out) if r["key_id"] == key_id]
    assert (row["requests"], row["completion_tokens"]) == (2, 32)


def cli_run(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(VLLAMA), *args], capture_output=True, text=True, env={**os.environ, **env}, check=False
    )


def test_cli_keys_and_usage_over_the_admin_api(
    tmp_path: Path, serve: Callable[..., tuple[Proc, str]]
) -> None:
    """With --url the commands talk to the running gateway (changes apply at
    once; usage includes counts not yet written); without, to the store."""
    _, url = serve(**KEYED, VLLAMA_USAGE_FLUSH_INTERVAL="3600")
    admin = {"VLLAMA_ADMIN_KEY": ADMIN}
    made = cli_run(
        "keys", "create", "--url", url, "--name", "web", "--tpm", "500", "--json", **admin
    )
    assert made.returncode == 0, made.stderr
    created = json.loads(made.stdout)
    key_id, secret = created["id"], created["key"]
    assert (created["name"], created["tpm"]) == ("web", 500)
    assert httpx.get(url + "/api/tags", headers=bearer(secret)).status_code == 200  # at once

    listed = cli_run("keys", "list", "--url", url, "--admin-key", ADMIN)
    assert listed.returncode == 0
    assert key_id in listed.stdout
    assert "active" in listed.stdout
    assert secret not in listed.stdout
    [stored] = json.loads(cli("keys", "list", "--json", "--home", str(tmp_path)))
    assert stored["id"] == key_id  # the same keys as the store holds

    answer = httpx.post(url + "/api/chat", json={**CHAT, "stream": False}, headers=bearer(secret))
    counts = answer.json()["prompt_eval_count"], answer.json()["eval_count"]
    shown = cli_run("usage", "--url", url, "--key", key_id, "--json", **admin)
    assert shown.returncode == 0, shown.stderr
    [row] = json.loads(shown.stdout)
    assert (row["requests"], row["prompt_tokens"], row["completion_tokens"]) == (1, *counts)
    assert row["key_name"] == "web"
    in_store = json.loads(cli("usage", "--json", "--key", key_id, "--home", str(tmp_path)))
    assert in_store == []  # not written yet: only the gateway knew

    turned = cli_run("keys", "rotate", key_id, "--url", url, **admin)
    assert turned.returncode == 0
    assert httpx.get(url + "/api/tags", headers=bearer(secret)).status_code == 401
    secret = turned.stdout.strip()
    assert httpx.get(url + "/api/tags", headers=bearer(secret)).status_code == 200
    assert cli_run("keys", "revoke", key_id, "--url", url, **admin).returncode == 0
    assert httpx.get(url + "/api/tags", headers=bearer(secret)).status_code == 401
    missing = cli_run("keys", "revoke", "key_000000000000", "--url", url, **admin)
    assert missing.returncode != 0
    assert "no key" in missing.stderr

    wrong = "admin-" + secrets.token_hex(16)
    refused = cli_run("keys", "list", "--url", url, "--admin-key", wrong)
    assert refused.returncode != 0
    assert "admin key required" in refused.stderr
    assert wrong not in refused.stdout + refused.stderr
    unkeyed = cli_run("usage", "--url", url, VLLAMA_ADMIN_KEY="")
    assert unkeyed.returncode == 2
    assert "admin key" in unkeyed.stderr
