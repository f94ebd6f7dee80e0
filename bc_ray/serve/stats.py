"""Request metrics kept off the hot path: requests record into plain Python counters, and the
replica's background thread flushes them to Ray's metrics (Prometheus) every poll interval. Each
Ray metric call costs about a millisecond on a small machine, more than the transform itself."""

from __future__ import annotations

import threading
from collections import defaultdict

import numpy as np

# Prometheus histogram buckets (ms): a transform answers in 1-5 ms, a lookup in about 1 ms.
LATENCY_BUCKETS_MS = [0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 5000]
# Each Ray metric call costs about a millisecond: a flush observes a bounded uniform sample.
SAMPLE_PER_FLUSH = 256


class ReplicaStats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._latencies: dict[tuple[str, int], list[float]] = defaultdict(list)
        self._batches: list[int] = []
        self._metrics = None
        self._rng = np.random.default_rng(0)

    def record(self, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self._latencies[(route, status)].append(seconds * 1000.0)

    def record_batch(self, size: int) -> None:
        with self._lock:
            self._batches.append(size)

    def drain(self) -> tuple[dict[tuple[str, int], list[float]], list[int]]:
        with self._lock:
            latencies, batches = self._latencies, self._batches
            self._latencies, self._batches = defaultdict(list), []
        return latencies, batches

    def flush(self, version: int | None) -> None:
        """Push what accumulated since the last flush to Ray's metrics. Latencies go into a
        histogram (buckets add up across replicas, unlike per-replica percentiles); request
        counts are Serve's own `serve_num_http_requests`."""
        from ray.serve import metrics

        if self._metrics is None:
            self._metrics = {
                "latency": metrics.Histogram(
                    "bc_ray_request_latency_ms", "latency of answered requests (a uniform "
                    f"sample of at most {SAMPLE_PER_FLUSH} per route and flush)",
                    boundaries=LATENCY_BUCKETS_MS, tag_keys=("route", "status")),
                "batch": metrics.Gauge("bc_ray_transform_batch_size", "mean requests per "
                                       "matmul since the last flush"),
                "version": metrics.Gauge("bc_ray_version_served", "version this replica serves"),
            }
        latencies, batches = self.drain()
        for (route, status), values in latencies.items():
            for value in _sample(values, SAMPLE_PER_FLUSH, self._rng):
                self._metrics["latency"].observe(value, tags={"route": route,
                                                              "status": str(status)})
        if batches:
            self._metrics["batch"].set(float(np.mean(batches)))
        if version is not None:
            self._metrics["version"].set(version)


def _sample(values: list[float], limit: int, rng: np.random.Generator) -> list[float]:
    if len(values) <= limit:
        return values
    return [values[i] for i in rng.choice(len(values), size=limit, replace=False)]
