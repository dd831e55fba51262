"""Per-backend figures for Prometheus, read from the router when scraped,
so the hot path pays nothing for them."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from vllama.routing.router import Router

BREAKER_STATES = ("closed", "open", "half_open")


class RouterCollector(Collector):
    def __init__(self, router: Router) -> None:
        self.router = router

    def collect(self) -> Iterator[Metric]:
        backends = self.router.backends
        labels = ["backend"]
        served = CounterMetricFamily(
            "vllama_backend_requests", "Requests answered, by backend", labels=labels
        )
        failed = CounterMetricFamily(
            "vllama_backend_failures", "Failures before the first byte, by backend", labels=labels
        )
        outstanding = GaugeMetricFamily(
            "vllama_backend_outstanding", "Requests in flight, by backend", labels=labels
        )
        healthy = GaugeMetricFamily(
            "vllama_backend_healthy", "1 when the last health check passed", labels=labels
        )
        state = GaugeMetricFamily(
            "vllama_backend_breaker", "1 for the circuit breaker's state", labels=[*labels, "state"]
        )
        for b in backends:
            served.add_metric([b.name], float(b.served))
            failed.add_metric([b.name], float(b.failures))
            outstanding.add_metric([b.name], float(b.outstanding))
            healthy.add_metric([b.name], 1.0 if b.healthy and b.engine_ready else 0.0)
            for name in BREAKER_STATES:
                state.add_metric([b.name, name], 1.0 if b.breaker.state == name else 0.0)
        yield from (served, failed, outstanding, healthy, state)
        queued = GaugeMetricFamily("vllama_queue_depth", "Requests waiting", labels=["model"])
        rejected = CounterMetricFamily(
            "vllama_queue_rejected", "Requests refused as busy", labels=["model"]
        )
        for model, queue in self.router.queues.items():
            queued.add_metric([model], float(len(queue.waiters)))
            rejected.add_metric([model], float(queue.rejected))
        yield from (queued, rejected)
