"""/metrics in Prometheus' text format (prometheus_client, a registry of the server's own): requests by endpoint,
adapter and status, request latency, forward batch sizes per adapter, and the adapters loaded."""

from __future__ import annotations

from ..inference.pool import RunPool
from .batcher import BatchStats

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServerMetrics:
    def __init__(self, pool: RunPool):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics

        disable_created_metrics()  # the *_created series double the output and say nothing a scraper needs
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "adapterkit_requests", "HTTP requests answered.", ["endpoint", "adapter", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "adapterkit_request_seconds",
            "Time from request to response.",
            ["endpoint", "adapter"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch = Histogram(
            "adapterkit_batch_size",
            "Texts or prompts in one forward batch.",
            ["adapter", "kind"],
            buckets=BATCH_BUCKETS,
            registry=self.registry,
        )
        loaded = Gauge("adapterkit_adapters_loaded", "Runs loaded on the shared base.", registry=self.registry)
        loaded.set_function(lambda: len(pool.runs))

    def request(self, endpoint: str, adapter: str, status: int, seconds: float) -> None:
        self.requests.labels(endpoint, adapter, str(status)).inc()
        self.latency.labels(endpoint, adapter).observe(seconds)

    def batch_stats(self) -> BatchStats:
        return BatchStats(lambda adapter, kind, n: self.batch.labels(adapter, kind).observe(n))

    def text(self) -> str:
        from prometheus_client import generate_latest

        return generate_latest(self.registry).decode()
