"""Throughput and latency of POST /v1/transform (64 vectors of 256 dims per request): the Ray
Serve app against plain single-process FastAPI + numpy servers, JSON and binary, in one run.

A bounded asyncio load generator on loopback: fixed duration per point, concurrency 1, 8, 32.

    python benchmarks/bench_serve.py [--seconds 8]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time

import httpx
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from benchmarks.common import print_table, scratch_dir, write_json  # noqa: E402
from tests.conftest import free_port  # noqa: E402
from tests.helpers import store_with_chain  # noqa: E402

DIM, ROWS = 256, 64
JSON_BODY = None


async def load(url: str, content: bytes, headers: dict, concurrency: int,
               seconds: float) -> dict:
    latencies: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal errors
        while time.perf_counter() < stop:
            started = time.perf_counter()
            try:
                answer = await client.post(url, content=content, headers=headers)
                ok = answer.status_code == 200
            except httpx.HTTPError:
                ok = False
            latencies.append(time.perf_counter() - started)
            errors += not ok

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:
        begun = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - begun
    ms = np.array(latencies) * 1000
    return {"rps": len(latencies) / elapsed, "p50": float(np.percentile(ms, 50)),
            "p99": float(np.percentile(ms, 99)), "errors": errors, "requests": len(latencies)}


def wait_ready(url: str) -> None:
    for _ in range(120):
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} never became ready")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--ingress", choices=("haproxy", "default"), default="haproxy",
                        help="haproxy: Ray Serve's HAProxy + direct ingress (what `bc-ray "
                             "serve` uses); default: Ray Serve's Python proxy.")
    args = parser.parse_args()
    if args.ingress == "haproxy":
        from bc_ray.cluster import enable_fast_ingress

        enable_fast_ingress()
    import orjson
    import ray
    from ray import serve

    from bc_ray.serve.app import build_app
    from bc_ray.serve.config import ServeConfig

    rows = np.random.default_rng(1).normal(size=(ROWS, DIM)).astype(np.float32)
    json_body = orjson.dumps({"from_version": 1, "to_version": 0, "embeddings": rows.tolist()})
    uri = f"file://{scratch_dir('bench-serve-')}/store"
    store_with_chain(uri, [DIM, DIM], rows=1000)
    plain_port, serve_port = free_port(), free_port()
    plain = subprocess.Popen([sys.executable, os.path.join(os.path.dirname(__file__),
                                                           "plain_server.py"),
                              str(plain_port), str(DIM), str(DIM)])
    ray.init(address="local", include_dashboard=False, log_to_driver=False)
    serve.start(http_options={"host": "127.0.0.1", "port": serve_port})
    serve.run(build_app(ServeConfig(store=uri)), name="bench", route_prefix="/")
    try:
        wait_ready(f"http://127.0.0.1:{plain_port}/healthz")
        wait_ready(f"http://127.0.0.1:{serve_port}/readyz")
        targets = {
            ("plain FastAPI", "json"): (f"http://127.0.0.1:{plain_port}/v1/transform", json_body,
                                        {"content-type": "application/json"}),
            ("plain FastAPI", "binary"): (f"http://127.0.0.1:{plain_port}/v1/transform-binary",
                                          rows.tobytes(),
                                          {"content-type": "application/octet-stream"}),
            ("bc_ray Serve", "json"): (f"http://127.0.0.1:{serve_port}/v1/transform", json_body,
                                       {"content-type": "application/json"}),
            ("bc_ray Serve", "binary"): (
                f"http://127.0.0.1:{serve_port}/v1/transform?from_version=1&to_version=0",
                rows.tobytes(), {"content-type": "application/octet-stream"}),
        }
        results, table = {}, []
        for concurrency in [int(c) for c in args.concurrency.split(",")]:
            for (server, fmt), (url, content, headers) in targets.items():
                asyncio.run(load(url, content, headers, concurrency, 1.0))  # warm-up
                result = asyncio.run(load(url, content, headers, concurrency, args.seconds))
                results[f"{server}/{fmt}/{concurrency}"] = result
            for fmt in ("json", "binary"):
                base = results[f"plain FastAPI/{fmt}/{concurrency}"]
                ours = results[f"bc_ray Serve/{fmt}/{concurrency}"]
                for server, result in (("plain FastAPI", base), ("bc_ray Serve", ours)):
                    table.append([server, fmt, concurrency, result["rps"], result["p50"],
                                  result["p99"], result["errors"],
                                  result["rps"] / base["rps"]])
        print_table(f"POST /v1/transform, {ROWS} x {DIM} float32 per request, "
                    f"{args.seconds:g}s per point, {os.cpu_count()} CPUs, {args.ingress} ingress",
                    ["server", "body", "concurrency", "req/s", "p50 ms", "p99 ms", "errors",
                     "vs plain"], table)
        write_json(f"serve_{args.ingress}", results)
    finally:
        plain.terminate()
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main()
