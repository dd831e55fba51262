"""Active health checks: each backend's health route, every ``interval`` seconds.

vLLM and other OpenAI-compatible servers answer ``GET /health``; Ollama answers
``GET /`` ("Ollama is running"). A backend whose check fails gets no traffic
(unless nothing else is left) until a check passes again. The managed engine is
left to its supervisor, which polls it already. One task, owned by the app's
lifespan; the checks of one round run concurrently, each bounded by a timeout.
"""

from __future__ import annotations

import asyncio
import logging

from vllama.errors import VllamaError
from vllama.routing.backend import Backend
from vllama.upstream.client import Upstream

log = logging.getLogger("vllama.routing")


async def check(upstream: Upstream, backend: Backend, limit: float) -> bool:
    try:
        async with asyncio.timeout(limit):
            response = await upstream.open(
                "GET", backend.base_url + backend.config.health_route, api_key=backend.api_key
            )
            await response.read()  # to the end, so that the connection is kept
    except (VllamaError, TimeoutError):
        return False
    return response.status < 300


async def _round(upstream: Upstream, backends: list[Backend], limit: float) -> None:
    verdicts = await asyncio.gather(*(check(upstream, b, limit) for b in backends))
    for backend, healthy in zip(backends, verdicts, strict=True):
        if healthy != backend.healthy or not backend.checked:
            level = logging.INFO if healthy else logging.WARNING
            log.log(level, "backend %s is %s", backend.name, "healthy" if healthy else "unhealthy")
        backend.healthy = healthy
        backend.checked = True


async def watch_health(upstream: Upstream, backends: list[Backend], interval: float) -> None:
    """Run forever (until cancelled); the first round runs at once, so that
    ``/ready`` knows soon which backends are up."""
    checked = [b for b in backends if b.actively_checked]
    if not checked:
        return
    timeout = min(2.0, interval)
    while True:
        try:
            await _round(upstream, checked, timeout)
        except Exception:  # a bug here must not end the checks for good
            log.exception("health check round failed")
        await asyncio.sleep(interval)
