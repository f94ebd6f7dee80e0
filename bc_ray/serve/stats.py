"""Request metrics kept off the hot path: requests record into plain Python counters, and the
replica's background thread flushes them to Ray's metrics (Prometheus) every poll interval. Each
Ray metric call costs about a millisecond on a small machine, more than the transform itself."""

from __future__ import annotations

import threading
from collections import Counter, defaultdict

import numpy as np


class ReplicaStats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter = Counter()
        self._latencies: dict[str, list[float]] = defaultdict(list)
        self._batches: list[int] = []
        self._metrics = None

    def record(self, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self._counts[(route, status)] += 1
            self._latencies[route].append(seconds * 1000.0)

    def record_batch(self, size: int) -> None:
        with self._lock:
            self._batches.append(size)

    def drain(self) -> tuple[Counter, dict[str, list[float]], list[int]]:
        with self._lock:
            counts, latencies, batches = self._counts, self._latencies, self._batches
            self._counts, self._latencies, self._batches = Counter(), defaultdict(list), []
        return counts, latencies, batches

    def flush(self, version: int | None) -> None:
        """Push what accumulated since the last flush to Ray's metrics."""
        from ray.serve import metrics

        if self._metrics is None:
            self._metrics = {
                "requests": metrics.Counter("bc_ray_requests", "HTTP requests answered",
                                            tag_keys=("route", "status")),
                "p50": metrics.Gauge("bc_ray_latency_p50_ms", "median latency since the last "
                                     "flush", tag_keys=("route",)),
                "p99": metrics.Gauge("bc_ray_latency_p99_ms", "99th percentile latency since "
                                     "the last flush", tag_keys=("route",)),
                "batch": metrics.Gauge("bc_ray_transform_batch_size", "mean requests per "
                                       "matmul since the last flush"),
                "version": metrics.Gauge("bc_ray_version_served", "version this replica serves"),
            }
        counts, latencies, batches = self.drain()
        for (route, status), count in counts.items():
            self._metrics["requests"].inc(count, tags={"route": route, "status": str(status)})
        for route, values in latencies.items():
            self._metrics["p50"].set(float(np.percentile(values, 50)), tags={"route": route})
            self._metrics["p99"].set(float(np.percentile(values, 99)), tags={"route": route})
        if batches:
            self._metrics["batch"].set(float(np.mean(batches)))
        if version is not None:
            self._metrics["version"].set(version)
