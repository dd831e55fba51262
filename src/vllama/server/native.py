"""Requests to an Ollama backend, in Ollama's own API: no translation.

An ``/api/chat`` or ``/api/generate`` routed to an Ollama server goes there as
the client sent it, with only the model renamed to the backend's name; its
NDJSON (or, with ``stream:false``, its one JSON object) comes back as it
arrives. The first chunk is the commit point (``routing.stream.peek``): until
then a failure fails over; after it, an error is one last ``{"error": ...}``
line. Token counts for usage come from the final line, as Ollama reports them.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any

import orjson
from starlette.responses import Response

from vllama.auth.metering import Meter
from vllama.errors import UpstreamError, VllamaError
from vllama.protocol.ndjson import dumps_line
from vllama.routing.backend import Backend
from vllama.routing.router import BACKEND_HEADER, Failover, fails_over
from vllama.routing.stream import Peeked, peek
from vllama.server.gateway import Gateway
from vllama.upstream.client import UpstreamResponse


def _message(payload: bytes) -> str:
    try:
        decoded = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return payload.decode("utf-8", "replace").strip() or "backend error"
    if isinstance(decoded, dict) and isinstance(decoded.get("error"), str):
        return str(decoded["error"])
    return "backend error"


async def _error_answer(backend: Backend, response: UpstreamResponse) -> Response:
    """The backend's own error, relayed; one worth another backend (a 5xx, the
    model not there) raises Failover carrying it."""
    payload = await response.read()
    if not payload.strip():
        payload = orjson.dumps({"error": f"backend {backend.name} answered {response.status}"})
    answer = Response(
        payload,
        status_code=response.status,
        media_type="application/json",
        headers={BACKEND_HEADER: backend.name},
    )
    message = _message(payload)
    if fails_over(response.status, message):
        raise Failover(UpstreamError(message, status=response.status), answer)
    return answer


async def _post(
    gw: Gateway,
    backend: Backend,
    path: str,
    body: dict[str, Any],
    target: str,
    headers: Mapping[str, str],
) -> UpstreamResponse | Response:
    """``body`` to the Ollama ``backend`` under its own model name; an error
    status comes back as the answer to give the client."""
    response = await gw.upstream.open(
        "POST",
        backend.base_url + path,
        body=orjson.dumps(dict(body, model=target)),
        headers=headers,
        api_key=backend.api_key,
    )
    if response.status >= 400:
        return await _error_answer(backend, response)
    return response


async def native_attempt(
    gw: Gateway,
    backend: Backend,
    path: str,
    body: dict[str, Any],
    target: str,
    headers: Mapping[str, str],
) -> Response | Peeked:
    """Send ``body`` to the Ollama ``backend`` and wait for its first chunk."""
    response = await _post(gw, backend, path, body, target, headers)
    if isinstance(response, Response):
        return response
    return await peek(response)


def _meter_last_line(meter: Meter | None, tail: bytes) -> None:
    if meter is None:
        return
    lines = [line for line in tail.split(b"\n") if line.strip()]
    if not lines:
        return
    try:
        final = orjson.loads(lines[-1])
    except orjson.JSONDecodeError:
        return
    if isinstance(final, dict) and final.get("done"):
        meter.tokens(int(final.get("prompt_eval_count", 0)), int(final.get("eval_count", 0)))


async def relay_ndjson(opened: Peeked, meter: Meter | None) -> AsyncIterator[bytes]:
    """The backend's bytes as they come; an error after them is an in-band line."""
    tail = b""
    try:
        chunk = opened.first
        while chunk:
            tail = (tail + chunk)[-4096:]
            yield chunk
            chunk = await anext(opened.rest, b"")
        _meter_last_line(meter, tail)
    except VllamaError as err:
        yield (b"" if not tail or tail.endswith(b"\n") else b"\n") + dumps_line(
            {"error": err.message}
        )
    finally:
        opened.response.close()


async def native_answer(
    gw: Gateway,
    backend: Backend,
    path: str,
    body: dict[str, Any],
    target: str,
    headers: Mapping[str, str],
    meter: Meter | None,
) -> Response:
    """A one-object Ollama answer (``/api/embed``, ``/api/embeddings``), relayed whole."""
    response = await _post(gw, backend, path, body, target, headers)
    if isinstance(response, Response):
        return response
    payload = await response.read()
    if meter is not None:
        with contextlib.suppress(orjson.JSONDecodeError, TypeError, ValueError):
            meter.tokens(int(orjson.loads(payload).get("prompt_eval_count", 0)), 0)
    return Response(
        payload,
        status_code=response.status,
        media_type=response.headers.get("content-type", "application/json"),
        headers={BACKEND_HEADER: backend.name},
    )
