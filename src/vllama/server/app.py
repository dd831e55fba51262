"""The composition root: ``create_app`` wires routes, middleware and the
error edge around one ``Gateway``; the lifespan owns every background task."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response

from vllama.errors import VllamaError
from vllama.server.body import ClientGone
from vllama.server.errors import dialect_of, error_response
from vllama.server.gateway import Gateway
from vllama.server.middleware.fast_path import FastPath
from vllama.server.middleware.request_id import RequestIdMiddleware
from vllama.server.routes import models, ollama, openai, ops

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
                seen_ready = True
            except VllamaError as err:
                log.warning("could not list the engine's models: %s", err.message)
        elif not gateway.engine.is_ready:
            seen_ready = False
        await asyncio.sleep(0.5)


def create_app(gateway: Gateway, *, access_log: bool = True) -> Starlette:
    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await gateway.upstream.start()
        await gateway.engine.start()
        follower = asyncio.create_task(_follow_engine(gateway), name="vllama-follow-engine")
        try:
            yield
        finally:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower
            await gateway.engine.stop()
            await gateway.upstream.close()

    app = Starlette(
        routes=[*ops.routes, *ollama.routes, *models.routes, *openai.routes],
        middleware=[
            Middleware(RequestIdMiddleware, metrics=gateway.metrics, access_log=access_log),
            Middleware(FastPath, endpoint=openai.relay, paths=openai.Relay.paths),
        ],
        exception_handlers={
            VllamaError: _on_vllama_error,
            HTTPException: _on_http_error,
            ClientGone: _on_client_gone,
            Exception: _on_unexpected,
        },
        lifespan=lifespan,
    )
    app.state.gateway = gateway
    return app
