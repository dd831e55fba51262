"""What models there are: Ollama's /api/tags, /api/show, /api/ps and
OpenAI's /v1/models, all from the one catalogue so the names agree."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from vllama.auth.principal import allow_model, visible
from vllama.models.catalog import ServedModel
from vllama.models.modelfile import modelfile_text, parameters_text
from vllama.models.names import normalize
from vllama.protocol.ollama import format_time
from vllama.server.body import model_name, parse_object, read_body
from vllama.server.gateway import Gateway, gateway_of
from vllama.server.switch import find_model

_UNKNOWN_DETAILS: dict[str, Any] = {
    "parent_model": "",
    "format": "",
    "family": "",
    "families": None,
    "parameter_size": "",
    "quantization_level": "",
}


def _summary(model: ServedModel) -> dict[str, Any]:
    local = model.local
    modified = local.modified_at if local else format_time(model.created * 10**9)
    return {
        "name": model.name,
        "model": model.name,
        "modified_at": modified,
        "size": local.size if local else 0,
        "digest": local.digest if local else "",
        "details": dict(local.details) if local else dict(_UNKNOWN_DETAILS),
        "capabilities": model.capabilities,
    }


def _listed(gw: Gateway) -> list[ServedModel]:
    """What /api/tags shows: every model on disk, plus what the engine serves that is
    not on disk (attach mode, a Hub id given to --model)."""
    served = list(gw.catalog.all())
    if gw.models is None:
        return served
    on_disk = [
        gw.catalog.find(m.name) or ServedModel(name=m.name, served_name=m.name, local=m)
        for m in gw.models.store.list()
    ]
    seen = {normalize(m.name) for m in on_disk}
    return on_disk + [m for m in served if normalize(m.name) not in seen]


async def tags(request: Request) -> Response:
    models = visible(request.scope, _listed(gateway_of(request)))
    return JSONResponse({"models": [_summary(m) for m in models]})


async def show(request: Request) -> Response:
    gw = gateway_of(request)
    raw = await read_body(request, gw.settings.max_body_bytes)
    body = parse_object(raw) if raw.strip() else {}
    model = find_model(gw, model_name(body))  # served, or without an engine, on disk
    allow_model(request.scope, model_name(body), model.name, model.served_name)
    local = model.local
    info: dict[str, Any] = dict(local.model_info) if local else {}
    system = local.system if local else ""
    params = local.parameters if local else {}
    answer: dict[str, Any] = {
        "modelfile": modelfile_text(
            local.parent or model.served_name if local else model.served_name, system, params
        ),
        "parameters": parameters_text(params),
        "template": local.template if local else "",
        "details": dict(local.details) if local else dict(_UNKNOWN_DETAILS),
        "model_info": info,
        "capabilities": model.capabilities,
        "modified_at": _summary(model)["modified_at"],
    }
    if system:
        answer["system"] = system
    if model.max_model_len and not any(k.endswith(".context_length") for k in info):
        info["general.context_length"] = model.max_model_len
    return JSONResponse(answer)


def _running(gw: Gateway, model: ServedModel, expires_at: float) -> dict[str, Any]:
    entry = _summary(model)
    entry.pop("capabilities")
    entry["expires_at"] = format_time(int(expires_at * 10**9))
    entry["size_vram"] = entry["size"] if gw.device == "gpu" else 0
    if model.max_model_len:
        entry["context_length"] = model.max_model_len
    return entry


async def ps(request: Request) -> Response:
    """What is loaded: each ready managed engine's models, expiring when keep_alive
    will stop that engine (server/fleet.py); attached, what the engine serves."""
    gw = gateway_of(request)
    fleet = gw.fleet
    if fleet is None:
        if not gw.engine.is_ready:
            return JSONResponse({"models": []})
        models = [(m, gw.keep_alive.expires_at(m.name)) for m in gw.catalog.all()]
    else:
        loaded = [s for s in fleet.slots if s.engine.is_ready]
        served = {s: s.expires_at(gw.keep_alive) for s in loaded}
        models = [(m, served[s]) for s in loaded for m in gw.catalog.all() if s.serves(m)]
    running = [_running(gw, m, expires) for m, expires in _visible_pairs(request, models)]
    running.sort(key=lambda e: str(e["expires_at"]), reverse=True)
    return JSONResponse({"models": running})


def _visible_pairs(
    request: Request, pairs: list[tuple[ServedModel, float]]
) -> list[tuple[ServedModel, float]]:
    """The pairs whose model the caller's key may see."""
    shown = {id(m) for m in visible(request.scope, [m for m, _ in pairs])}
    return [(m, e) for m, e in pairs if id(m) in shown]


def _openai_model(model: ServedModel) -> dict[str, Any]:
    owner = model.name.split("/")[0] if "/" in model.name else "vllama"
    return {"id": model.name, "object": "model", "created": model.created, "owned_by": owner}


async def openai_models(request: Request) -> Response:
    models = visible(request.scope, gateway_of(request).catalog.all())
    return JSONResponse({"object": "list", "data": [_openai_model(m) for m in models]})


async def openai_model(request: Request) -> Response:
    model = gateway_of(request).catalog.resolve(request.path_params["model"])
    allow_model(request.scope, request.path_params["model"], model.name, model.served_name)
    return JSONResponse(_openai_model(model))


routes = [
    Route("/api/tags", tags, methods=["GET", "HEAD"]),  # model management: routes/manage.py
    Route("/api/show", show, methods=["POST"]),
    Route("/api/ps", ps, methods=["GET", "HEAD"]),
    Route("/v1/models", openai_models, methods=["GET"]),
    Route("/v1/models/{model:path}", openai_model, methods=["GET"]),
]
