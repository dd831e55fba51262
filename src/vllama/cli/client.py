"""The one HTTP client the CLI's model commands use to talk to a running server.

Why its own: every command but ``serve`` is a client of the Ollama API, as the
``ollama`` CLI is of its server, so they work against any vLLama (or Ollama) on
``OLLAMA_HOST``. Standard library only (``http.client``), so the CLI starts fast;
NDJSON streams are read line by line as they arrive. Errors come back as
``ClientError`` with the server's own message.
"""

from __future__ import annotations

import http.client
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

from vllama.settings import parse_ollama_host

DEFAULT_TIMEOUT = 30.0


class ClientError(Exception):
    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def default_host(environ: dict[str, str] | None = None) -> str:
    """``OLLAMA_HOST`` as the server reads it, with a wildcard bind made dialable."""
    env = os.environ if environ is None else environ
    host, port = parse_ollama_host(env.get("OLLAMA_HOST", "") or "127.0.0.1")
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass
class Client:
    host: str  #: "host:port"
    timeout: float | None = DEFAULT_TIMEOUT
    #: The bearer key to send; None: ``OLLAMA_API_KEY``, as the ``ollama`` CLI does.
    api_key: str | None = None
    secure: bool = False  #: https
    prefix: str = ""  #: a path the server is mounted under (behind a proxy)

    @classmethod
    def for_url(cls, url: str, api_key: str) -> Client:
        """A client of the gateway at ``url`` (http or https, maybe under a path)."""
        parts = urlsplit(url if "://" in url else "http://" + url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ClientError(f"not a gateway URL: {url!r} (want http://host:port)")
        secure = parts.scheme == "https"
        return cls(parts.netloc, api_key=api_key, secure=secure, prefix=parts.path.rstrip("/"))

    def _request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: Any = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> http.client.HTTPResponse:
        kind = http.client.HTTPSConnection if self.secure else http.client.HTTPConnection
        conn = kind(self.host, timeout=timeout)
        sent = dict(headers or {})
        data: Any = raw
        if body is not None:
            data = json.dumps(body).encode()
            sent["Content-Type"] = "application/json"
        if key := self.api_key or os.environ.get("OLLAMA_API_KEY"):
            sent["Authorization"] = f"Bearer {key}"
        try:
            conn.request(method, self.prefix + path, body=data, headers=sent)
            response = conn.getresponse()
        except OSError as exc:
            conn.close()
            raise ClientError(f"could not connect to vLLama at {self.host}: {exc}") from exc
        if response.status >= 400:
            text = response.read().decode(errors="replace")
            conn.close()
            raise ClientError(_error_text(text, response.reason), response.status)
        return response

    def call(self, method: str, path: str, body: Any = None) -> Any:
        """One call answered with JSON (or nothing)."""
        response = self._request(method, path, body)
        text = response.read()
        return json.loads(text) if text.strip() else None

    def _stream(self, path: str, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """NDJSON objects as they arrive; an in-band ``error`` line raises."""
        response = self._request("POST", path, body, timeout=None)
        with response:
            for line in response:
                if not line.strip():
                    continue
                event = json.loads(line)
                if "error" in event:
                    raise ClientError(str(event["error"]))
                yield event

    # -- the API -------------------------------------------------------------------
    def tags(self) -> list[dict[str, Any]]:
        models: list[dict[str, Any]] = self.call("GET", "/api/tags")["models"]
        return models

    def show(self, name: str) -> dict[str, Any]:
        answer: dict[str, Any] = self.call("POST", "/api/show", {"model": name})
        return answer

    def delete(self, name: str) -> None:
        self.call("DELETE", "/api/delete", {"model": name})

    def copy(self, source: str, destination: str) -> None:
        self.call("POST", "/api/copy", {"source": source, "destination": destination})

    def pull(self, name: str) -> Iterator[dict[str, Any]]:
        return self._stream("/api/pull", {"model": name})

    def create(self, request: dict[str, Any]) -> Iterator[dict[str, Any]]:
        return self._stream("/api/create", request)

    def has_blob(self, digest: str) -> bool:
        try:
            self._request("HEAD", f"/api/blobs/{quote(digest)}").read()
        except ClientError as err:
            if err.status == 404:
                return False
            raise
        return True

    def upload_blob(self, digest: str, path: Path) -> None:
        size = path.stat().st_size
        with path.open("rb") as handle:
            self._request(
                "POST",
                f"/api/blobs/{quote(digest)}",
                raw=handle,
                headers={"Content-Length": str(size)},
                timeout=None,
            ).read()


def _error_text(text: str, reason: str) -> str:
    """The server's own error message, in either dialect (Ollama's string,
    OpenAI's object)."""
    try:
        error = json.loads(text)["error"]
    except (ValueError, KeyError, TypeError):
        return text.strip() or reason
    if isinstance(error, dict):
        error = error.get("message", error)
    return str(error)


def host_option(func: Any) -> Any:
    """The ``--host`` option every client command takes (default: ``OLLAMA_HOST``)."""
    import click

    return click.option(
        "--host",
        default=None,
        help="Server to talk to, host:port (default: OLLAMA_HOST or 127.0.0.1:11434).",
    )(func)


def client_for(host: str | None) -> Client:
    if host is None:
        return Client(default_host())
    return Client(default_host({"OLLAMA_HOST": host}))
