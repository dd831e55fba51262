"""Prometheus instruments, one registry per app (no module-level state).

Engine figures are read when scraped (a collector), so the hot path pays
nothing for them; per-request figures are two label lookups and an add,
done by the access middleware when a response ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from vllama.engine.handle import EngineHandle

ENGINE_STATES = ("stopped", "starting", "ready", "restarting", "stopping", "failed", "attached")

#: Paths reported as themselves; anything else is "other", so a scanner
#: probing random URLs cannot blow up the label set.
KNOWN_PATHS = frozenset(
    {
        "/",
        "/api/chat",
        "/api/generate",
        "/api/embed",
        "/api/embeddings",
        "/api/tags",
        "/api/show",
        "/api/ps",
        "/api/version",
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/v1/models",
        "/health",
        "/ready",
        "/metrics",
    }
)


class _EngineCollector(Collector):
    def __init__(self, engine: EngineHandle) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        state = GaugeMetricFamily(
            "vllama_engine_state", "1 for the engine's current state", labels=["state"]
        )
        for name in ENGINE_STATES:
            state.add_metric([name], 1.0 if self.engine.state == name else 0.0)
        yield state
        yield GaugeMetricFamily(
            "vllama_engine_ready",
            "1 when model routes can be served",
            value=1.0 if self.engine.is_ready else 0.0,
        )
        yield CounterMetricFamily(
            "vllama_engine_restarts",
            "Engine restarts after a crash",
            value=float(getattr(self.engine, "restarts", 0)),
        )
        yield GaugeMetricFamily(
            "vllama_asyncio_tasks",
            "Tasks alive in the gateway's event loop (leak watch)",
            value=float(_task_count()),
        )


def _task_count() -> int:
    try:
        return len(asyncio.all_tasks())
    except RuntimeError:  # scraped outside the loop (tests, other threads)
        return 0


class Metrics:
    def __init__(self, engine: EngineHandle) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.registry.register(_EngineCollector(engine))
        ProcessCollector(registry=self.registry)  # RSS, CPU, open fds of the gateway
        self.requests = Counter(
            "vllama_http_requests",
            "HTTP requests answered, by path and status",
            ["path", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "vllama_http_request_duration_seconds",
            "Time from request to the end of the response (whole stream included)",
            ["path"],
            registry=self.registry,
            buckets=(0.001, 0.005, 0.025, 0.1, 0.5, 1, 2.5, 10, 30, 120),
        )
        self._children: dict[tuple[str, int], tuple[Any, Any]] = {}

    def observe(self, path: str, status: int, seconds: float) -> None:
        label = path if path in KNOWN_PATHS else "other"
        key = (label, status)
        children = self._children.get(key)
        if children is None:  # once per (path, status): labels() is the costly part
            children = (self.requests.labels(label, str(status)), self.duration.labels(label))
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)
