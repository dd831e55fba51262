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
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from vllama.errors import BadRequest, UpstreamError, VllamaError
from vllama.server.body import parse_object, receive_body
from vllama.server.errors import error_response, openai_error_body
from vllama.server.gateway import Gateway
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


class Relay:
    """The relay as a bare ASGI endpoint: on the hottest path of the gateway it
    skips building a Request and the per-route exception wrapper, and renders
    its own errors (always in OpenAI's dialect)."""

    #: The paths it serves; the app sends POSTs to them straight here.
    paths = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/embeddings"})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            response = await self._relay(scope, receive)
        except VllamaError as err:
            response = error_response(err, "openai")
        await response(scope, receive, send)

    async def _relay(self, scope: Scope, receive: Receive) -> Response | LiveStream:
        gw: Gateway = scope["app"].state.gateway
        raw = await receive_body(scope, receive, gw.settings.max_body_bytes)
        body = parse_object(raw)
        name = body.get("model")
        if not isinstance(name, str) or not name:
            raise BadRequest("you must provide a model parameter", param="model")
        model = gw.catalog.resolve(name)
        gw.require_ready()
        if model.served_name != name:
            body["model"] = model.served_name
            raw = orjson.dumps(body)
        request_id = scope["state"]["request_id"]
        response = await gw.upstream.open(
            "POST",
            gw.engine_url(scope["path"]),
            body=raw,
            headers={"content-type": "application/json", "x-request-id": request_id},
            api_key=gw.engine.api_key,
        )
        if response.status >= 400:
            return _faithful_error(response.status, await response.read())
        media_type = response.headers.get("content-type", "application/json")
        if body.get("stream") is True:
            return LiveStream(_relay_chunks(response), media_type=media_type)
        return Response(await response.read(), status_code=response.status, media_type=media_type)


relay = Relay()

routes = [Route(path, relay, methods=["POST"]) for path in sorted(Relay.paths)]
