"""The OpenAI API, relayed: checked, renamed, and otherwise left alone.

Only ``model``, ``stream`` and ``stream_options`` are read. The client's body
is forwarded as it came unless the model name must change to the engine's
served name, or a metered stream lacks ``stream_options.include_usage`` (the
engine is then asked for usage, and ``auth/hidden_usage.py`` takes it out of
the relayed bytes again, so the client sees what it asked for), so every
field the engine supports (n, logprobs, tool_choice, response_format,
structured outputs, extra sampling parameters) works without the gateway
knowing it. Engine bytes come back as they arrive: no re-serialisation, no
buffering. These few routes are the allow-list: nothing else of the engine
(``/pause``, ``/invocations``, ``/tokenize``, ...) is reachable.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import orjson
from starlette.background import BackgroundTask
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from vllama.auth.hidden_usage import HiddenUsage, ask_usage
from vllama.auth.metering import Meter
from vllama.errors import BadRequest, UpstreamError, VllamaError
from vllama.routing.backend import Backend
from vllama.routing.router import BACKEND_HEADER, Failover, Lease, fails_over
from vllama.routing.stream import Leased, Peeked, peek
from vllama.server.body import ClientGone, parse_object, receive_body
from vllama.server.errors import error_response, openai_error_body
from vllama.server.gateway import Gateway
from vllama.server.streaming import LiveStream
from vllama.server.switch import load_model
from vllama.translate.responses import openai_error_message
from vllama.upstream.client import UpstreamResponse

log = logging.getLogger("vllama.server")

#: What an attempt commits to: an error answer, a stream's first chunk, or a status.
Opened = Response | Peeked | UpstreamResponse


async def _relay_chunks(
    opened: Peeked, meter: Meter | None, hidden: HiddenUsage | None = None
) -> AsyncIterator[bytes]:
    """The engine's stream as it comes; with ``hidden``, less the usage the
    gateway asked for on the client's behalf."""
    try:
        chunk = opened.first
        while chunk:
            if hidden is not None:
                relayed = hidden.feed(chunk)
                if relayed:
                    yield relayed
            else:
                if meter is not None:
                    meter.feed(chunk)
                yield chunk
            chunk = await anext(opened.rest, b"")
        if hidden is not None and (rest := hidden.close()):
            yield rest
    except VllamaError as err:
        if hidden is not None and (rest := hidden.close()):
            yield rest
        yield b"data: " + openai_error_body(err) + b"\n\n"
    finally:
        opened.response.close()
        if meter is not None:
            meter.close()


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


#: The paths the relay serves; the app sends POSTs to them straight to it.
RELAY_PATHS = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/embeddings"})
#: The paths whose streams can report usage (``stream_options.include_usage``).
USAGE_PATHS = frozenset({"/v1/chat/completions", "/v1/completions"})


class Relay:
    """The relay as a bare ASGI endpoint, reached before the router: on the
    hottest path of the gateway it skips building a Request, the router and the
    exception layers, and renders its own errors (always in OpenAI's dialect)."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            response = await self._relay(scope, receive)
        except VllamaError as err:
            response = error_response(err, "openai")
        except ClientGone:
            return  # nobody is listening
        except Exception as exc:  # a bug: still an answer in the caller's dialect
            log.exception("unexpected error on POST %s", scope["path"])
            response = error_response(
                VllamaError(f"internal error: {type(exc).__name__}", status=500), "openai"
            )
        await response(scope, receive, send)

    async def _relay(self, scope: Scope, receive: Receive) -> Response | LiveStream:
        gw = self.gateway
        raw = await receive_body(scope, receive, gw.settings.max_body_bytes)
        body = parse_object(raw)
        name = body.get("model")
        if not isinstance(name, str) or not name:
            raise BadRequest("you must provide a model parameter", param="model")
        model = await load_model(gw, name)
        gw.auth.admit_request(scope, body, name, model.name, model.served_name)
        headers = {"content-type": "application/json", "x-request-id": scope["state"]["request_id"]}
        stream = body.get("stream") is True
        meter = gw.auth.meter(scope, model.name)
        asked = None
        if stream and meter is not None and scope["path"] in USAGE_PATHS:
            asked = ask_usage(body)
        sent = body if asked is None else asked

        async def attempt(backend: Backend, target: str, lease: Lease) -> Opened:
            same = target == name and asked is None
            payload = raw if same else orjson.dumps(dict(sent, model=target))
            response = await gw.upstream.open(
                "POST",
                backend.base_url + scope["path"],
                body=payload,
                headers=headers,
                api_key=backend.api_key,
            )
            if response.status >= 400:
                error = await response.read()
                answer = _faithful_error(response.status, error)
                answer.headers[BACKEND_HEADER] = backend.name
                message = openai_error_message(error)
                if fails_over(response.status, message):  # the next backend, or this answer
                    raise Failover(UpstreamError(message, status=response.status), answer)
                return answer
            return await peek(response) if stream else response

        key = gw.router.key_for(model, scope, body)
        result, lease = await gw.router.route(model, attempt, key=key)
        hidden = HiddenUsage(meter) if asked is not None and meter is not None else None
        return await _answer(result, lease, meter, hidden)


async def _answer(
    result: Opened, lease: Lease, meter: Meter | None, hidden: HiddenUsage | None
) -> Response | LiveStream:
    """The committed answer: relayed as a stream, or read whole (the lease ends with it)."""
    if isinstance(result, Response):
        return result
    tag = {BACKEND_HEADER: lease.backend.name}
    if isinstance(result, Peeked):
        media_type = result.response.headers.get("content-type", "text/event-stream")
        chunks = Leased(_relay_chunks(result, meter, hidden), lease, result.response)
        return LiveStream(chunks, media_type=media_type, headers=tag)
    try:
        payload = await result.read()
    finally:
        lease.release()
    # Reading the usage out of the answer waits until the client has it.
    charge = None if meter is None else BackgroundTask(_charge, meter, payload)
    media_type = result.headers.get("content-type", "application/json")
    return Response(
        payload, status_code=result.status, media_type=media_type, headers=tag, background=charge
    )


async def _charge(meter: Meter, payload: bytes) -> None:
    meter.body(payload)  # async, so that Starlette does not hand it to a thread


def routes(relay: Relay) -> list[Route]:
    """The relay's routes for the router, which sees only what the fast path
    lets by: other methods on these paths, for their 405."""
    return [Route(path, relay, methods=["POST"]) for path in sorted(RELAY_PATHS)]
