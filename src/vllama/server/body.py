"""Reading request bodies: bounded, and errors in our tree.

The size limit is enforced while reading, so a 10 MB body is refused after
the limit's worth of bytes, not after buffering all of it.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.types import Receive, Scope

from vllama.errors import BadRequest, ModelNotFound, ModelRequired, PayloadTooLarge


class ClientGone(Exception):
    """The client left before its request body arrived; nobody to answer."""


async def read_body(request: Request, limit: int) -> bytes:
    return await receive_body(request.scope, request.receive, limit)


async def receive_body(scope: Scope, receive: Receive, limit: int) -> bytes:
    """The whole request body, straight from ASGI ``receive``."""
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit() and int(value) > limit:
            raise PayloadTooLarge(f"request body larger than {limit} bytes")
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone()
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body larger than {limit} bytes")
        parts.append(chunk)
        if not message.get("more_body", False):
            return parts[0] if len(parts) == 1 else b"".join(parts)


def parse_object(body: bytes) -> dict[str, Any]:
    """Decode a JSON object; any other JSON value or invalid JSON is a 400."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"invalid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise BadRequest(f"invalid JSON: expected an object, got {type(value).__name__}")
    return value


def model_name(body: dict[str, Any], *, missing_is_404: bool = False) -> str:
    """The model a request names (``name`` is Ollama's deprecated alias).

    Ollama answers a missing model with 400 ``model is required`` on most
    routes but 404 ``model '' not found`` on generate; the caller says which.
    """
    name = body.get("model") or body.get("name")
    if isinstance(name, str) and name:
        return name
    if missing_is_404:
        raise ModelNotFound("")
    raise ModelRequired()
