"""The admin API from tests: the admin key every keyed test gateway is started
with, and the few calls the auth suites make through it."""

from __future__ import annotations

import secrets
import time
from typing import Any

import httpx

ADMIN = "admin-" + secrets.token_hex(16)


def bearer(secret: str) -> dict[str, str]:
    return {"authorization": f"Bearer {secret}"}


def new_key(url: str, **spec: Any) -> tuple[str, str]:
    """A new key's (id, secret), made through ``/admin/keys``."""
    answer = httpx.post(url + "/admin/keys", json={"name": "t", **spec}, headers=bearer(ADMIN))
    assert answer.status_code == 201, answer.text
    return answer.json()["id"], answer.json()["key"]


def usage_of(url: str, key_id: str) -> tuple[int, int, int]:
    """A key's (requests, prompt tokens, completion tokens) from ``/admin/usage``."""
    answer = httpx.get(url + "/admin/usage", params={"key": key_id}, headers=bearer(ADMIN))
    rows = answer.json()["usage"]
    return (
        sum(r["requests"] for r in rows),
        sum(r["prompt_tokens"] for r in rows),
        sum(r["completion_tokens"] for r in rows),
    )


def counted_usage(url: str, key_id: str, timeout: float = 5) -> tuple[int, int, int]:
    """``usage_of`` once the key's request is counted: a stream the client left
    is charged when the gateway notices, a moment later."""
    deadline = time.monotonic() + timeout
    while (usage := usage_of(url, key_id))[0] == 0:
        assert time.monotonic() < deadline, "the abandoned request was never counted"
        time.sleep(0.05)
    return usage
