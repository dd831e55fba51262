"""The composition root: ``create_app`` wires routes, middleware and the
error edge around one ``Gateway``; the lifespan owns every background task."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp

from vllama.errors import VllamaError
from vllama.routing.health import watch_health
from vllama.server.body import ClientGone
from vllama.server.errors import dialect_of, error_response
from vllama.server.gateway import Gateway
from vllama.server.middleware.auth import AuthMiddleware
from vllama.server.middleware.cors import cors_middleware
from vllama.server.middleware.fast_path import FastPath
from vllama.server.middleware.request_id import RequestIdMiddleware
from vllama.server.routes import admin, manage, models, ollama, openai, ops, ws

log = logging.getLogger("vllama.server")


async def _on_vllama_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, VllamaError)
    return error_response(exc, dialect_of(request.scope["path"]))


async def _on_http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    message = "404 page not found" if exc.status_code == 404 else str(exc.detail).lower()
    err = VllamaError(message, status=exc.status_code)
    err.openai_type = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
    return error_response(err, dialect_of(request.scope["path"]))


async def _on_client_gone(request: Request, exc: Exception) -> Response:
    """Nobody is listening; 499 (as Ollama logs it) just closes the exchange."""
    return Response(status_code=499)


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    err = VllamaError(f"internal error: {type(exc).__name__}", status=500)
    return error_response(err, dialect_of(request.scope["path"]))


async def _follow_engine(gateway: Gateway) -> None:
    """Once the engine is ready, learn its context lengths (and, attached, its models)."""
    seen_ready = False
    while True:
        if gateway.engine.is_ready and not seen_ready:
            try:
                listing = await gateway.upstream.json(
                    "GET", gateway.engine_url("/v1/models"), api_key=gateway.engine.api_key
                )
                gateway.catalog.update_from_engine(listing)
                gateway.router.adopt(gateway.catalog, listing)
                seen_ready = True
            except VllamaError as err:
                log.warning("could not list the engine's models: %s", err.message)
        elif not gateway.engine.is_ready:
            seen_ready = False
        await asyncio.sleep(0.5)


def create_app(gateway: Gateway, *, access_log: bool = True) -> ASGIApp:
    """The whole gateway as one ASGI app.

    The edge (request ids and the access log, CORS, keys and limits) is plain
    ASGI wrapped around everything. Inside it, POSTs to the OpenAI relay go
    straight to the relay; everything else goes to Starlette's router, whose
    exception handlers render errors in the caller's dialect. The hottest
    path thus skips the router and Starlette's own layers.
    """

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gateway.auth.start()
        await gateway.upstream.start()
        await gateway.engine.start()
        follower = asyncio.create_task(_follow_engine(gateway), name="vllama-follow-engine")
        health = asyncio.create_task(
            watch_health(
                gateway.upstream, gateway.router.backends, gateway.settings.health_interval
            ),
            name="vllama-backend-health",
        )
        tasks = [follower, health]
        if gateway.fleet is not None:  # keep_alive: stops engines left idle
            tasks.append(asyncio.create_task(gateway.fleet.run(), name="vllama-keep-alive"))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if gateway.models is not None:
                await gateway.models.close()
            if gateway.fleet is not None:
                await gateway.fleet.close()
            await gateway.engine.stop()
            await gateway.upstream.close()
            await gateway.auth.stop()

    relay = openai.Relay(gateway)
    router = Starlette(
        routes=[
            *ops.routes,
            *ollama.routes,
            *models.routes,
            *manage.routes,
            *openai.routes(relay),
            *admin.routes,
            *ws.routes,
        ],
        exception_handlers={
            VllamaError: _on_vllama_error,
            HTTPException: _on_http_error,
            ClientGone: _on_client_gone,
            Exception: _on_unexpected,
        },
        lifespan=lifespan,
    )
    router.state.gateway = gateway
    app: ASGIApp = FastPath(router, endpoint=relay, paths=openai.RELAY_PATHS)
    app = AuthMiddleware(app, auth=gateway.auth, settings=gateway.settings)
    app = cors_middleware(app, gateway.settings)
    return RequestIdMiddleware(app, metrics=gateway.metrics, access_log=access_log)
