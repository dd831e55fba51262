"""Ollama generations over the engine's streaming OpenAI API.

The engine is always asked to stream (with usage), whether or not the client
streams: the gateway then sees the first token arrive, which is the honest end
of prefill for ``prompt_eval_duration``, and one code path serves both
``stream:true`` (NDJSON, a line per delta) and ``stream:false`` (the same
objects merged into one). Nothing is sent to the client until the engine has
produced something, so an error before the first token still gets its real
status; after that, errors are one in-band ``{"error": ...}`` line.

The router (``routing/``) picks the backend; the first output is the commit
point, so a backend that fails before it is passed over for the next one. An
Ollama backend gets the client's own body instead (``server/native.py``).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any, Literal

import orjson
from starlette.responses import Response

from vllama.auth.metering import Meter
from vllama.errors import UpstreamError, VllamaError
from vllama.models.catalog import ServedModel
from vllama.protocol.ndjson import dumps_line
from vllama.protocol.ollama import format_time
from vllama.protocol.sse import SSEDecoder
from vllama.routing.backend import Backend
from vllama.routing.router import BACKEND_HEADER, Lease
from vllama.routing.stream import Leased, Peeked
from vllama.server.gateway import Gateway
from vllama.server.native import native_attempt, relay_ndjson
from vllama.server.streaming import LiveStream
from vllama.translate.requests import UpstreamCall
from vllama.translate.responses import OllamaStream, Timings, openai_error_message
from vllama.translate.stream import merge_stream
from vllama.upstream.client import UpstreamResponse

Kind = Literal["chat", "generate"]
NDJSON = "application/x-ndjson"


def now_text() -> str:
    return format_time(time.time_ns())


async def engine_events(response: UpstreamResponse) -> AsyncIterator[dict[str, Any]]:
    """Decoded SSE events of an engine stream; an in-band engine error raises."""
    decoder = SSEDecoder()
    try:
        async for chunk in response.chunks():
            for payload in decoder.feed(chunk):
                if payload == b"[DONE]":
                    return
                try:
                    event = orjson.loads(payload)
                except orjson.JSONDecodeError as exc:
                    raise UpstreamError("engine sent an undecodable event") from exc
                if isinstance(event, dict) and "error" in event:
                    raise UpstreamError(openai_error_message(payload))
                if isinstance(event, dict):
                    yield event
    finally:
        response.close()


class _Generation:
    """One generation's translation state: events in, Ollama objects out."""

    def __init__(self, kind: Kind, model: str, timings: Timings, meter: Meter | None) -> None:
        self.state = OllamaStream(kind, model)
        self.timings = timings
        self.meter = meter

    def translate(self, event: dict[str, Any]) -> list[dict[str, Any]]:
        out = self.state.feed(event, now_text())
        if self.timings.first_token_ns is None and self.state.first_token_seen:
            self.timings.first_token_ns = time.monotonic_ns()
        return out

    def final(self) -> dict[str, Any]:
        self.timings.done_ns = time.monotonic_ns()
        final = self.state.finish(self.timings, now_text())
        if self.meter is not None:
            self.meter.tokens(final.get("prompt_eval_count", 0), final.get("eval_count", 0))
        return final

    def charge_so_far(self) -> None:
        """The generation ended without its final object (client gone, error):
        charge the running usage last seen (a no-op once ``final`` charged)."""
        if self.meter is not None:
            self.meter.usage(self.state.usage)


class _Started:
    """A translated generation whose first output has arrived (the commit point)."""

    def __init__(
        self,
        response: UpstreamResponse,
        events: AsyncIterator[dict[str, Any]],
        generation: _Generation,
        first: list[dict[str, Any]],
    ) -> None:
        self.response = response
        self.events = events
        self.generation = generation
        self.first = first


async def ollama_generation(
    gw: Gateway,
    call: UpstreamCall,
    *,
    kind: Kind,
    model: str,
    arrived_ns: int,
    request_id: str,
    meter: Meter | None = None,
    served: ServedModel,
    native: dict[str, Any],
    key: bytes | None = None,
) -> Response | LiveStream:
    """One generation through the router: translated to an OpenAI-compatible
    backend, or ``native`` (the client's body) as it is to an Ollama one."""
    # Metered, the engine reports the running usage on every chunk
    # (``continuous_usage_stats``), so a client that leaves mid-way is charged
    # what was generated until then.
    usage = {"include_usage": True}
    if meter is not None:
        usage["continuous_usage_stats"] = True
    body = dict(call.body, stream=True, stream_options=usage)
    timings = Timings(
        arrived_ns=arrived_ns, sent_ns=time.monotonic_ns(), first_token_ns=None, done_ns=0
    )
    headers = {"content-type": "application/json", "x-request-id": request_id}

    async def attempt(backend: Backend, target: str, lease: Lease) -> Response | Peeked | _Started:
        if backend.native_ollama:
            return await native_attempt(gw, backend, f"/api/{kind}", native, target, headers)
        timings.sent_ns = time.monotonic_ns()
        response = await gw.upstream.open_ok(
            "POST",
            backend.base_url + call.path,
            body=orjson.dumps(dict(body, model=target)),
            headers=headers,
            api_key=backend.api_key,
        )
        events = engine_events(response)
        generation = _Generation(kind, model, timings, meter)
        return _Started(response, events, generation, await _first_objects(events, generation))

    result, lease = await gw.router.route(served, attempt, key=key)
    tag = {BACKEND_HEADER: lease.backend.name}
    if isinstance(result, Response):
        return result
    if isinstance(result, Peeked):
        media_type = result.response.headers.get("content-type", NDJSON)
        chunks = Leased(relay_ndjson(result, meter), lease, result.response)
        return LiveStream(chunks, media_type=media_type, headers=tag)
    if not call.stream:
        try:
            answer = await _collect(result.first, result.events, result.generation, kind)
        finally:
            lease.release()
        answer.headers.update(tag)
        return answer
    chunks = Leased(_ndjson(result.first, result.events, result.generation), lease, result.response)
    return LiveStream(chunks, media_type=NDJSON, headers=tag)


async def _first_objects(
    events: AsyncIterator[dict[str, Any]], generation: _Generation
) -> list[dict[str, Any]]:
    """Wait for the first thing worth sending; errors here still get a status."""
    try:
        async for event in events:
            out = generation.translate(event)
            if out:
                return out
    except BaseException:
        await events.aclose()  # type: ignore[attr-defined]
        raise
    return []


async def _ndjson(
    first: list[dict[str, Any]],
    events: AsyncIterator[dict[str, Any]],
    generation: _Generation,
) -> AsyncIterator[bytes]:
    try:
        for obj in first:
            yield dumps_line(obj)
        async for event in events:
            for obj in generation.translate(event):
                yield dumps_line(obj)
        yield dumps_line(generation.final())
    except VllamaError as err:
        yield dumps_line({"error": err.message})
    finally:
        generation.charge_so_far()
        await events.aclose()  # type: ignore[attr-defined]


async def _collect(
    first: list[dict[str, Any]],
    events: AsyncIterator[dict[str, Any]],
    generation: _Generation,
    kind: Kind,
) -> Response:
    pieces: list[dict[str, Any]] = list(first)
    try:
        async for event in events:
            pieces.extend(generation.translate(event))
    except BaseException:
        generation.charge_so_far()  # broke off; final() charges a whole answer
        raise
    return Response(
        orjson.dumps(merge_stream(kind, pieces, generation.final())), media_type="application/json"
    )
