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
from starlette.types import Scope

from vllama.errors import BadRequest
from vllama.models.catalog import ServedModel
from vllama.models.modelfile import with_system
from vllama.protocol.ollama import parse_think
from vllama.routing.backend import Backend
from vllama.routing.router import BACKEND_HEADER, Lease
from vllama.server.body import model_name, parse_object, read_body
from vllama.server.gateway import Gateway, gateway_of, request_id_of
from vllama.server.native import native_answer
from vllama.server.relay import Kind, now_text, ollama_generation
from vllama.server.streaming import LiveStream
from vllama.server.switch import find_model, load_model, unload_model, wait_loaded
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
    if "completion" not in caps:  # an embedding model: the engine has no chat for it
        raise BadRequest(f'"{typed}" does not support {kind}')
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
    return await generation(gw, request.scope, body, kind, request_id_of(request), arrived)


async def generation(
    gw: Gateway, scope: Scope, body: dict[str, Any], kind: Kind, request_id: str, arrived: int
) -> Response | LiveStream:
    """One ``/api/chat`` or ``/api/generate`` request, its body already read:
    shared by the HTTP routes and the WebSocket (``routes/ws.py``)."""
    typed = model_name(body, missing_is_404=kind == "generate")
    keep = gw.keep_alive.requested(body.get("keep_alive"))
    unload = keep == 0 and is_load_request(kind, body)  # nothing to load for
    model = find_model(gw, typed) if unload else await load_model(gw, typed)
    gw.auth.admit_request(scope, body, typed, model.name, model.served_name)
    if unload:
        await unload_model(gw, model)
        return JSONResponse(load_response(kind, typed, now_text(), unload=True))
    if is_load_request(kind, body):
        await wait_loaded(gw, model)
        gw.keep_alive.touch(model.name, keep)
        return JSONResponse(load_response(kind, typed, now_text(), unload=False))
    _check_capabilities(kind, body, typed, model)
    translate = chat_request if kind == "chat" else generate_request
    local = model.local  # a created model's SYSTEM and PARAMETERs, under the request's own
    if local is not None and local.system:
        body = with_system(kind, body, local.system)
    call = translate(body, model.served_name, default_options=local.parameters if local else None)
    gw.keep_alive.touch(model.name, keep)
    return await ollama_generation(
        gw, call, kind=kind, model=typed, arrived_ns=arrived, request_id=request_id,
        meter=gw.auth.meter(scope, model.name),
        served=model, native=body, key=gw.router.key_for(model, scope, body),
    )  # fmt: skip


async def chat(request: Request) -> Response | LiveStream:
    return await _generation(request, "chat")


async def generate(request: Request) -> Response | LiveStream:
    return await _generation(request, "generate")


async def _embedding_call(request: Request, legacy: bool) -> Response:
    arrived = time.monotonic_ns()
    gw = gateway_of(request)
    body = await _body(request)
    typed = model_name(body)
    model = await load_model(gw, typed)
    gw.auth.admit_request(request.scope, body, typed, model.name, model.served_name)
    if "embedding" not in model.capabilities:
        raise BadRequest(f"{model.name} does not support embedding")
    keep = gw.keep_alive.requested(body.get("keep_alive"))
    payload = (embeddings_request if legacy else embed_request)(body, model.served_name)
    gw.keep_alive.touch(model.name, keep)
    if not payload["input"]:
        return JSONResponse({"embedding": []} if legacy else {"model": typed, "embeddings": []})
    sent = time.monotonic_ns()
    meter = gw.auth.meter(request.scope, model.name)
    headers = {"content-type": "application/json", "x-request-id": request_id_of(request)}

    async def attempt(backend: Backend, target: str, lease: Lease) -> Any:
        if backend.native_ollama:  # Ollama's own /api/embed(dings), untranslated
            path = request.url.path
            return await native_answer(gw, backend, path, body, target, headers, meter)
        return await gw.upstream.json(
            "POST",
            backend.base_url + "/v1/embeddings",
            dict(payload, model=target),
            headers=headers,
            api_key=backend.api_key,
        )

    answer, lease = await gw.router.route(model, attempt)
    lease.release()
    if isinstance(answer, Response):
        return answer
    if meter is not None:
        meter.usage(answer.get("usage"))
    tag = {BACKEND_HEADER: lease.backend.name}
    if legacy:
        return JSONResponse(embeddings_response(answer), headers=tag)
    done = time.monotonic_ns()
    timings = Timings(arrived_ns=arrived, sent_ns=sent, first_token_ns=done, done_ns=done)
    return JSONResponse(embed_response(answer, typed, timings), headers=tag)


async def embed(request: Request) -> Response:
    return await _embedding_call(request, legacy=False)


async def embeddings(request: Request) -> Response:
    return await _embedding_call(request, legacy=True)


routes = [
    Route("/api/generate", generate, methods=["POST"]),
    Route("/api/chat", chat, methods=["POST"]),
    Route("/api/embed", embed, methods=["POST"]),
    Route("/api/embeddings", embeddings, methods=["POST"]),
]  # model management (pull, create, copy, delete, blobs): routes/manage.py
