"""The Ollama REST API: thin handlers over translate/ and relay.

Each handler parses, resolves the model, checks what the model can do, and
hands a translated call to the relay. Status codes and messages follow
Ollama's own server (see shared spec): e.g. chat without a model is 400
``model is required`` while generate without one is 404 ``model '' not found``.
"""

from __future__ import annotations

import time
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from vllama.errors import BadRequest, NotSupported
from vllama.models.catalog import ServedModel
from vllama.protocol.ollama import parse_keep_alive, parse_think
from vllama.server.body import model_name, parse_object, read_body
from vllama.server.gateway import gateway_of, request_id_of
from vllama.server.relay import Kind, now_text, ollama_generation
from vllama.server.streaming import LiveStream
from vllama.translate.requests import (
    chat_request,
    embed_request,
    embeddings_request,
    generate_request,
    is_load_request,
)
from vllama.translate.responses import Timings, embed_response, embeddings_response, load_response


async def _body(request: Request, *, empty: dict[str, Any] | None = None) -> dict[str, Any]:
    raw = await read_body(request, gateway_of(request).settings.max_body_bytes)
    if not raw.strip():
        if empty is None:
            raise BadRequest("missing request body")
        return empty
    return parse_object(raw)


def _check_capabilities(kind: Kind, body: dict[str, Any], typed: str, model: ServedModel) -> None:
    caps = model.capabilities
    think = parse_think(body.get("think"))
    if think not in (None, False) and "thinking" not in caps:
        raise BadRequest(f'"{typed}" does not support thinking')
    if kind == "chat" and body.get("tools") and "tools" not in caps:
        raise BadRequest(f"{model.name} does not support tools")
    images = body.get("images") if kind == "generate" else None
    if kind == "chat" and isinstance(body.get("messages"), list):
        images = [m.get("images") for m in body["messages"] if isinstance(m, dict)]
        images = [i for i in images if i]
    if images and "vision" not in caps:
        raise BadRequest(f"{model.name} does not support vision")
    if kind == "generate" and body.get("suffix") and "insert" not in caps:
        raise BadRequest(f"{model.name} does not support insert")


async def _generation(request: Request, kind: Kind) -> Response | LiveStream:
    arrived = time.monotonic_ns()
    gw = gateway_of(request)
    body = await _body(request, empty={})
    typed = model_name(body, missing_is_404=kind == "generate")
    model = gw.catalog.resolve(typed)
    keep = parse_keep_alive(body.get("keep_alive"), gw.settings.keep_alive)
    if is_load_request(kind, body):
        gw.require_ready()
        gw.keep_alive.touch(model.name, keep)
        return JSONResponse(load_response(kind, typed, now_text(), unload=keep == 0))
    _check_capabilities(kind, body, typed, model)
    translate = chat_request if kind == "chat" else generate_request
    call = translate(body, model.served_name)
    gw.require_ready()
    gw.keep_alive.touch(model.name, keep)
    return await ollama_generation(
        gw, call, kind=kind, model=typed, arrived_ns=arrived, request_id=request_id_of(request)
    )


async def chat(request: Request) -> Response | LiveStream:
    return await _generation(request, "chat")


async def generate(request: Request) -> Response | LiveStream:
    return await _generation(request, "generate")


async def _embedding_call(request: Request, legacy: bool) -> Response:
    arrived = time.monotonic_ns()
    gw = gateway_of(request)
    body = await _body(request)
    typed = model_name(body)
    model = gw.catalog.resolve(typed)
    if "embedding" not in model.capabilities:
        raise BadRequest(f"{model.name} does not support embedding")
    keep = parse_keep_alive(body.get("keep_alive"), gw.settings.keep_alive)
    payload = (embeddings_request if legacy else embed_request)(body, model.served_name)
    gw.require_ready()
    gw.keep_alive.touch(model.name, keep)
    if not payload["input"]:
        return JSONResponse({"embedding": []} if legacy else {"model": typed, "embeddings": []})
    sent = time.monotonic_ns()
    answer = await gw.upstream.json(
        "POST",
        gw.engine_url("/v1/embeddings"),
        payload,
        headers={"x-request-id": request_id_of(request)},
        api_key=gw.engine.api_key,
    )
    if legacy:
        return JSONResponse(embeddings_response(answer))
    done = time.monotonic_ns()
    timings = Timings(arrived_ns=arrived, sent_ns=sent, first_token_ns=done, done_ns=done)
    return JSONResponse(embed_response(answer, typed, timings))


async def embed(request: Request) -> Response:
    return await _embedding_call(request, legacy=False)


async def embeddings(request: Request) -> Response:
    return await _embedding_call(request, legacy=True)


def not_yet(what: str) -> Any:
    async def handler(request: Request) -> Response:
        raise NotSupported(f"{what} is not supported by this vLLama version yet")

    return handler


routes = [
    Route("/api/generate", generate, methods=["POST"]),
    Route("/api/chat", chat, methods=["POST"]),
    Route("/api/embed", embed, methods=["POST"]),
    Route("/api/embeddings", embeddings, methods=["POST"]),
    Route("/api/pull", not_yet("pulling models"), methods=["POST"]),
    Route("/api/push", not_yet("pushing models"), methods=["POST"]),
    Route("/api/create", not_yet("creating models"), methods=["POST"]),
    Route("/api/copy", not_yet("copying models"), methods=["POST"]),
    Route("/api/delete", not_yet("deleting models"), methods=["DELETE"]),
    Route("/api/blobs/{digest}", not_yet("blob upload"), methods=["HEAD", "POST"]),
]
