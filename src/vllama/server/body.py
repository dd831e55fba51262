"""Reading request bodies: bounded, and errors in our tree.

The size limit is enforced while reading, so a 10 MB body is refused after
the limit's worth of bytes, not after buffering all of it.
"""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request

from vllama.errors import BadRequest, ModelNotFound, ModelRequired, PayloadTooLarge


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"request body larger than {limit} bytes")
    parts: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"request body larger than {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)


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
