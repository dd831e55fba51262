"""The admin API of a running gateway, as ``vllama keys`` and ``vllama usage``
use it with ``--url``: ``/admin/*`` (docs/AUTH.md) through the CLI's one HTTP
client (``cli/client.py``), with the admin key rather than ``OLLAMA_API_KEY``,
to any gateway URL, http or https. The admin key is sent as
``Authorization: Bearer`` and never printed; server errors come back as
``ClientError`` with the server's own message.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import quote, urlencode

from vllama.cli.client import Client, ClientError


class AdminAPI:
    def __init__(self, url: str, admin_key: str) -> None:
        self._client = Client.for_url(url, admin_key)

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        return self._client.call(method, path, body)

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
    def _or_none(call: Callable[[], Any]) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = call()
        except ClientError as err:
            if err.status == 404:
                return None
            raise
        return found
