"""Ollama's model management routes: pull, create, blobs, copy, delete (spec §4).

Thin: parse, hand to ``models.manager``, render. Streams (pull, create) are
NDJSON lines flushed as they happen; a failure before the first line still gets
its status (404 no such repo, 401 gated, 507 no disk), after it an in-band
``{"error": ...}`` line, as Ollama does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from vllama.errors import BadRequest, NotSupported, VllamaError
from vllama.models import names
from vllama.models.manager import ModelManager
from vllama.models.pull import MANIFEST_READY, Event, PullJob
from vllama.protocol.ndjson import dumps_line
from vllama.server.body import model_name, parse_object, read_body
from vllama.server.gateway import Gateway, gateway_of
from vllama.server.streaming import LiveStream

NDJSON = "application/x-ndjson"


def _manager(gw: Gateway) -> ModelManager:
    if gw.models is None:
        raise NotSupported("model management is off in this gateway")
    return gw.models


async def _body(request: Request) -> dict[str, Any]:
    raw = await read_body(request, gateway_of(request).settings.max_body_bytes)
    if not raw.strip():
        raise BadRequest("missing request body")
    return parse_object(raw)


def _streams(body: dict[str, Any]) -> bool:
    return body.get("stream") is not False


def _status_error(event: Event, job: PullJob) -> VllamaError:
    return job.error or VllamaError(str(event["error"]))


async def pull(request: Request) -> Response | LiveStream:
    gw = gateway_of(request)
    body = await _body(request)
    job = _manager(gw).pull(model_name(body))
    events = job.events()
    head: list[Event] = []
    # Wait until the manifest is read and the download fits: failures so far get a status.
    async for event in events:
        if "error" in event:
            await events.aclose()  # type: ignore[attr-defined]
            raise _status_error(event, job)
        if event.get("status") == MANIFEST_READY:
            break
        head.append(event)
    if not _streams(body):
        await job.done.wait()
        await events.aclose()  # type: ignore[attr-defined]
        if job.error is not None:
            raise job.error
        return JSONResponse({"status": "success"})
    return LiveStream(_pull_lines(head, events), media_type=NDJSON)


async def _pull_lines(head: list[Event], events: AsyncIterator[Event]) -> AsyncIterator[bytes]:
    try:
        for event in head:
            yield dumps_line(event)
        async for event in events:
            if event.get("status") != MANIFEST_READY:
                yield dumps_line(event)
    finally:
        await events.aclose()  # type: ignore[attr-defined]


async def delete(request: Request) -> Response:
    gw = gateway_of(request)
    name = model_name(await _body(request))
    loaded = gw.fleet.loaded_models() if gw.fleet is not None else gw.catalog.all()
    served = {names.normalize(m.name) for m in loaded if m.local is not None}
    await asyncio.to_thread(_manager(gw).delete, name, served=served)
    if gw.fleet is not None:  # an engine unloaded by keep_alive must not load it again
        gw.fleet.forget(name)
    return Response(status_code=200)


async def copy(request: Request) -> Response:
    gw = gateway_of(request)
    body = await _body(request)
    source, destination = body.get("source"), body.get("destination")
    if not isinstance(source, str) or not source:
        raise BadRequest('source "" is invalid')
    if not isinstance(destination, str) or not destination:
        raise BadRequest('destination "" is invalid')
    await asyncio.to_thread(_manager(gw).copy, source, destination)
    return Response(status_code=200)


async def blob_head(request: Request) -> Response:
    path = _manager(gateway_of(request)).blob_path(request.path_params["digest"])
    return Response(status_code=200 if path.is_file() else 404)


async def blob_upload(request: Request) -> Response:
    manager = _manager(gateway_of(request))
    digest = request.path_params["digest"]
    if manager.blob_path(digest).is_file():
        return Response(status_code=200)
    await manager.save_blob(digest, request.stream())
    return Response(status_code=201)


async def create(request: Request) -> Response | LiveStream:
    gw = gateway_of(request)
    manager = _manager(gw)
    body = await _body(request)
    manager.check_create(body)
    lines: asyncio.Queue[Event | None] = asyncio.Queue()
    failures: list[VllamaError] = []

    def progress(message: str) -> None:
        lines.put_nowait({"status": message})

    async def work() -> None:
        try:
            await manager.create(body, progress)
            lines.put_nowait({"status": "success"})
        except VllamaError as err:
            failures.append(err)
            lines.put_nowait({"error": err.message})
        finally:
            lines.put_nowait(None)

    task = asyncio.create_task(work(), name="vllama-create")
    if not _streams(body):
        async for _ in _drain(lines):
            pass
        await task
        if failures:
            raise failures[0]
        return JSONResponse({"status": "success"})
    return LiveStream(_create_lines(lines, task), media_type=NDJSON)


async def _drain(lines: asyncio.Queue[Event | None]) -> AsyncIterator[Event]:
    while (event := await lines.get()) is not None:
        yield event


async def _create_lines(
    lines: asyncio.Queue[Event | None], task: asyncio.Task[None]
) -> AsyncIterator[bytes]:
    try:
        async for event in _drain(lines):
            yield dumps_line(event)
    finally:
        if not task.done():  # the client left: stop the import (kills its worker)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def push(request: Request) -> Response:
    raise NotSupported("pushing models is not supported: vLLama pulls from the Hugging Face Hub")


routes = [
    Route("/api/pull", pull, methods=["POST"]),
    Route("/api/delete", delete, methods=["DELETE"]),
    Route("/api/copy", copy, methods=["POST"]),
    Route("/api/create", create, methods=["POST"]),
    Route("/api/blobs/{digest}", blob_head, methods=["HEAD"]),
    Route("/api/blobs/{digest}", blob_upload, methods=["POST"]),
    Route("/api/push", push, methods=["POST"]),
]
