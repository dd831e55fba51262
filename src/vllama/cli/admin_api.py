"""The admin API of a running gateway, as ``vllama keys`` and ``vllama usage``
use it with ``--url``.

Why a client of its own next to ``cli/client.py``: that one speaks the Ollama
API on ``OLLAMA_HOST`` with the caller's ``OLLAMA_API_KEY``; this one speaks
``/admin/*`` (docs/AUTH.md) with the admin key, to any gateway URL, http or
https. Standard library only, so the CLI stays quick to start. The admin key
is sent as ``Authorization: Bearer`` and never printed; server errors come back
as ``AdminError`` with the server's own message.
"""

from __future__ import annotations

import http.client
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

TIMEOUT = 30.0


class AdminError(Exception):
    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def _message(status: int, payload: bytes, reason: str) -> str:
    """The server's own error text, in either dialect."""
    try:
        error = json.loads(payload)["error"]
    except (ValueError, KeyError, TypeError):
        return payload.decode(errors="replace").strip() or f"{status} {reason}"
    if isinstance(error, dict):
        error = error.get("message", error)
    return str(error)


@dataclass(frozen=True)
class AdminAPI:
    url: str  #: the gateway, e.g. http://127.0.0.1:11434
    admin_key: str

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        parts = urlsplit(self.url if "://" in self.url else "http://" + self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise AdminError(f"not a gateway URL: {self.url!r} (want http://host:port)")
        secure = parts.scheme == "https"
        kind = http.client.HTTPSConnection if secure else http.client.HTTPConnection
        conn = kind(parts.netloc, timeout=TIMEOUT)
        headers = {"Authorization": f"Bearer {self.admin_key}", "Accept": "application/json"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            conn.request(method, parts.path.rstrip("/") + path, body=data, headers=headers)
            response = conn.getresponse()
            payload = response.read()
        except OSError as exc:
            raise AdminError(f"could not reach the gateway at {self.url}: {exc}") from exc
        finally:
            conn.close()
        if response.status >= 400:
            raise AdminError(_message(response.status, payload, response.reason), response.status)
        return json.loads(payload) if payload.strip() else None

    def keys(self) -> list[dict[str, Any]]:
        listing: list[dict[str, Any]] = self._call("GET", "/admin/keys")["keys"]
        return listing

    def create(self, spec: dict[str, Any]) -> dict[str, Any]:
        created: dict[str, Any] = self._call("POST", "/admin/keys", spec)
        return created

    def revoke(self, key_id: str) -> dict[str, Any] | None:
        return self._or_none(lambda: self._call("DELETE", f"/admin/keys/{quote(key_id)}"))

    def rotate(self, key_id: str) -> dict[str, Any] | None:
        return self._or_none(lambda: self._call("POST", f"/admin/keys/{quote(key_id)}/rotate"))

    def usage(self, *, since: str, key_id: str | None) -> list[dict[str, Any]]:
        query = {"since": since, **({"key": key_id} if key_id else {})}
        rows: list[dict[str, Any]] = self._call("GET", "/admin/usage?" + urlencode(query))["usage"]
        return rows

    @staticmethod
    def _or_none(call: Any) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = call()
        except AdminError as err:
            if err.status == 404:
                return None
            raise
        return found
