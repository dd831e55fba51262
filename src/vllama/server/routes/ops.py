"""Liveness, readiness and the probes Ollama clients send first."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from vllama import __version__
from vllama.protocol.ollama import OLLAMA_VERSION
from vllama.routing.readiness import readiness
from vllama.server.gateway import gateway_of
from vllama.server.openapi import openapi_document


async def root(request: Request) -> Response:
    return PlainTextResponse("Ollama is running")


async def version(request: Request) -> Response:
    return JSONResponse({"version": OLLAMA_VERSION}, headers={"x-vllama-version": __version__})


async def health(request: Request) -> Response:
    """The gateway process is alive: always 200, with the engine's state for humans."""
    engine = gateway_of(request).engine
    return JSONResponse({"status": "ok", "engine": engine.state, "version": __version__})


async def ready(request: Request) -> Response:
    """Ready to serve models: each model has a backend that is up (the engine,
    or another backend serving it); 503 + Retry-After until then."""
    gw = gateway_of(request)
    engine = gw.engine
    verdict = readiness(gw.router.backends, gw.catalog.all())
    body: dict[str, object] = {
        "status": "ready" if verdict.ready else "not ready",
        "engine": engine.state,
        "backends": verdict.backends,
    }
    if verdict.on_demand:
        body["on_demand"] = verdict.on_demand
    if verdict.ready:
        return JSONResponse(body)
    if verdict.unserved:
        body["unserved"] = verdict.unserved
    retry = engine.retry_after() if not engine.is_ready else 1
    return JSONResponse(body, status_code=503, headers={"Retry-After": str(retry)})


async def metrics(request: Request) -> Response:
    """Prometheus exposition of the gateway's own registry."""
    registry = gateway_of(request).metrics.registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


async def openapi(request: Request) -> Response:
    names = [model.name for model in gateway_of(request).catalog.all()]
    return JSONResponse(openapi_document(names))


routes = [
    Route("/", root, methods=["GET", "HEAD"]),
    Route("/api/version", version, methods=["GET", "HEAD"]),
    Route("/health", health, methods=["GET", "HEAD"]),
    Route("/ready", ready, methods=["GET", "HEAD"]),
    Route("/metrics", metrics, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"]),
]
