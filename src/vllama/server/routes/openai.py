"""The OpenAI API, relayed: checked, renamed, and otherwise left alone.

Only ``model`` and ``stream`` are read. The client's body is forwarded as it
came unless the model name must change to the engine's served name, so every
field the engine supports (n, logprobs, tool_choice, response_format,
structured outputs, extra sampling parameters) works without the gateway
knowing it. Engine bytes come back as they arrive: no re-serialisation, no
buffering. These few routes are the allow-list: nothing else of the engine
(``/pause``, ``/invocations``, ``/tokenize``, ...) is reachable.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from vllama.errors import BadRequest, UpstreamError, VllamaError
from vllama.server.body import parse_object, read_body
from vllama.server.errors import openai_error_body
from vllama.server.gateway import gateway_of, request_id_of
from vllama.server.streaming import LiveStream
from vllama.translate.responses import openai_error_message
from vllama.upstream.client import UpstreamResponse


async def _relay_chunks(response: UpstreamResponse) -> AsyncIterator[bytes]:
    try:
        async for chunk in response.chunks():
            yield chunk
    except VllamaError as err:
        yield b"data: " + openai_error_body(err) + b"\n\n"
    finally:
        response.close()


def _faithful_error(status: int, payload: bytes) -> Response:
    """An engine error, relayed: its own OpenAI error object when it sent one."""
    try:
        decoded = orjson.loads(payload)
    except orjson.JSONDecodeError:
        decoded = None
    if isinstance(decoded, dict) and isinstance(decoded.get("error"), dict):
        return Response(payload, status_code=status, media_type="application/json")
    err = UpstreamError(openai_error_message(payload), status=status)
    return Response(openai_error_body(err), status_code=status, media_type="application/json")


async def relay(request: Request) -> Response | LiveStream:
    gw = gateway_of(request)
    raw = await read_body(request, gw.settings.max_body_bytes)
    body = parse_object(raw)
    name = body.get("model")
    if not isinstance(name, str) or not name:
        raise BadRequest("you must provide a model parameter", param="model")
    model = gw.catalog.resolve(name)
    gw.require_ready()
    if model.served_name != name:
        body["model"] = model.served_name
        raw = orjson.dumps(body)
    response = await gw.upstream.open(
        "POST",
        gw.engine_url(request.url.path),
        body=raw,
        headers={"content-type": "application/json", "x-request-id": request_id_of(request)},
        api_key=gw.engine.api_key,
    )
    if response.status >= 400:
        return _faithful_error(response.status, await response.read())
    media_type = response.headers.get("content-type", "application/json")
    if body.get("stream") is True:
        return LiveStream(_relay_chunks(response), media_type=media_type)
    return Response(await response.read(), status_code=response.status, media_type=media_type)


routes = [
    Route("/v1/chat/completions", relay, methods=["POST"]),
    Route("/v1/completions", relay, methods=["POST"]),
    Route("/v1/embeddings", relay, methods=["POST"]),
]
