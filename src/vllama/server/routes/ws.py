"""``/api/ws``: Ollama chat over a WebSocket, one request at a time.

Protocol (docs/API.md): the client sends text frames, each a JSON ``/api/chat``
request body; the server answers each with the objects ``/api/chat`` would
send, one text frame per NDJSON object (with ``stream: false``, the one merged
object), the last with ``done: true`` and the counts; an error is a frame
``{"error": "..."}`` and the connection stays open for the next request.

Why its own route and not a second chat: the answer is the very stream
``relay.ollama_generation`` makes for ``/api/chat`` (its NDJSON lines are
split into frames), so translation, routing, metering and the charge of an
abandoned stream are shared. The key is checked on the handshake by the auth
middleware, which also holds the key's concurrency slot for the connection;
each request after the first is paced by the key's rate limits here, and each
is metered on its own. A client that closes mid-answer cancels the engine
request, as on HTTP. A handshake from a browser origin that CORS would not
allow is refused, since browsers apply no CORS to WebSockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import time
from typing import Any

import orjson
from starlette.responses import Response
from starlette.routing import WebSocketRoute
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from vllama.auth.principal import principal_of
from vllama.errors import PayloadTooLarge, VllamaError
from vllama.server.body import parse_object
from vllama.server.gateway import Gateway
from vllama.server.middleware.cors import cors_middleware
from vllama.server.routes.ollama import generation
from vllama.server.streaming import LiveStream
from vllama.translate.responses import openai_error_message

_GONE = None  #: what the reader queues when the client has closed
#: Requests a client may queue while one is answered; more closes the socket (1008).
MAX_PENDING = 16


async def chat_socket(websocket: WebSocket) -> None:
    gw: Gateway = websocket.app.state.gateway
    origin = websocket.headers.get("origin")
    if origin is not None and not _origin_allowed(gw, origin):
        # Browsers apply no CORS to WebSockets: without this, any web page could
        # use a gateway whose keys are optional (on loopback) through its visitor.
        await websocket.close(code=1008, reason="origin not allowed")
        return
    await websocket.accept()
    inbox: asyncio.Queue[str | None] = asyncio.Queue()
    gone = asyncio.Event()
    reader = asyncio.create_task(_read(websocket, inbox, gone), name="vllama-ws-read")
    prefix = f"ws{os.urandom(4).hex()}-"
    try:
        for number in itertools.count(1):
            text = await inbox.get()
            if text is _GONE:
                return
            await _one_request(websocket, gw, text, f"{prefix}{number}", gone, first=number == 1)
            if gone.is_set():
                return
    except WebSocketDisconnect:
        return  # gone while we were answering
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        if websocket.application_state == WebSocketState.CONNECTED and not gone.is_set():
            with contextlib.suppress(RuntimeError, OSError):
                await websocket.close()


async def _read(
    websocket: WebSocket, inbox: asyncio.Queue[str | None], gone: asyncio.Event
) -> None:
    """Every frame the client sends, queued; the close too (it cancels a running answer)."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            gone.set()
            inbox.put_nowait(_GONE)
            return
        if inbox.qsize() >= MAX_PENDING:  # bounded memory: a client must wait its turn
            gone.set()
            inbox.put_nowait(_GONE)
            with contextlib.suppress(RuntimeError, OSError, WebSocketDisconnect):
                await websocket.close(code=1008, reason="too many requests waiting")
            return
        text = message.get("text")
        if text is None and message.get("bytes") is not None:
            text = message["bytes"].decode("utf-8", errors="replace")
        inbox.put_nowait(text or "")


async def _one_request(
    websocket: WebSocket, gw: Gateway, text: str, request_id: str, gone: asyncio.Event, first: bool
) -> None:
    try:
        if not first:  # the handshake admitted the first one
            principal = principal_of(websocket.scope)
            if principal is not None and principal.limiter is not None:
                principal.limiter.pace()
        answer = await _chat(gw, websocket.scope, text, request_id)
    except VllamaError as err:
        await _send(websocket, orjson.dumps({"error": err.message}))
        return
    if isinstance(answer, LiveStream):
        await _pump(websocket, answer, gone)
    else:
        await _send(websocket, _frame_of(answer))


async def _chat(gw: Gateway, scope: Any, text: str, request_id: str) -> Response | LiveStream:
    """One ``/api/chat`` request, handled as ``routes/ollama.py`` handles it over HTTP."""
    arrived = time.monotonic_ns()
    raw = text.encode()
    limit = gw.settings.max_body_bytes
    if len(raw) > limit:
        raise PayloadTooLarge(f"request body larger than {limit} bytes")
    body = parse_object(raw) if text.strip() else {}
    return await generation(gw, scope, body, "chat", request_id, arrived)


async def _pump(websocket: WebSocket, answer: LiveStream, gone: asyncio.Event) -> None:
    """The stream's NDJSON lines as frames, until it ends or the client leaves."""

    async def frames() -> None:
        partial = b""
        async for chunk in answer.chunks:
            *lines, partial = (partial + chunk).split(b"\n")
            for line in lines:
                if line.strip():
                    await _send(websocket, line)
        if partial.strip():
            await _send(websocket, partial)

    pump = asyncio.ensure_future(frames())
    watch = asyncio.ensure_future(gone.wait())
    try:
        await asyncio.wait((pump, watch), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (pump, watch):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError, WebSocketDisconnect, RuntimeError):
            await pump
        with contextlib.suppress(asyncio.CancelledError):
            await watch
        aclose = getattr(answer.chunks, "aclose", None)
        if aclose is not None:
            await aclose()  # ends the engine request and charges what was made


def _origin_allowed(gw: Gateway, origin: str) -> bool:
    """The origins CORS allows for HTTP (local ones, ``cors_origins``/``OLLAMA_ORIGINS``)."""
    return cors_middleware(_no_app, gw.settings).is_allowed_origin(origin)


async def _no_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Only the origin rules of the CORS middleware are used here."""


def _frame_of(answer: Response) -> bytes:
    """A whole answer as one frame; an error answer as ``{"error": ...}``."""
    body = bytes(answer.body)
    if answer.status_code < 400:
        return body
    return orjson.dumps({"error": openai_error_message(body)})  # either dialect's error


async def _send(websocket: WebSocket, frame: bytes) -> None:
    await websocket.send_text(frame.decode())


routes = [WebSocketRoute("/api/ws", chat_socket)]
