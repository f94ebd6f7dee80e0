"""The nightly refresh and Serve of a 10M-edge graph on a two-node Ray cluster, with the store on
S3 (moto's server on 127.0.0.1), beside the plain single-process refresh reading the same store.

Two raylets on this machine (`ray.cluster_utils.Cluster`), one CPU each, so the refresh's two
task slots land one per node: the second node maps the graph and the layers through Ray's object
transfer, and both write their Parquet files to S3. Nothing is read from or written to the
driver's disk. Training is left out here (an epoch at 10M edges takes ~20 min on these cores);
`tests/cluster/test_two_nodes.py` runs the whole path, training included, on a small graph.

    python benchmarks/bench_two_nodes.py [--edges 10000000]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")

from benchmarks.bench_scale import (CUTOFF, HIDDEN, MB, in_fresh_process,  # noqa: E402
                                    plain_refresh, ray_refresh)
from benchmarks.common import print_table, scratch_dir, write_json  # noqa: E402
from tests.helpers import publish_untrained_model  # noqa: E402

NODE = {"num_cpus": 1, "object_store_memory": 4 << 30}


def start_s3() -> tuple[object, str]:
    import boto3

    from tests.conftest import start_s3_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per S3 request otherwise
    server, endpoint = start_s3_server()
    bucket = f"bc-ray-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=bucket)
    return server, f"s3://{bucket}/store"


def publish(uri: str, edges: int) -> float:
    """Seconds to build the snapshot and publish it, with a version-0 model, to the S3 store."""
    from bc_ray.core.graph import build_graph
    from bc_ray.data.snapshot import build_snapshot
    from bc_ray.data.synthetic import SyntheticConfig, generate
    from bc_ray.data.timeline import edges_until
    from bc_ray.store.snapshots import publish_snapshot
    from bc_ray.store.store import Store

    raw = generate(SyntheticConfig(num_users=edges // 10, num_items=edges // 100,
                                   num_edges=edges))
    started = time.perf_counter()
    snapshot = build_snapshot(raw).with_cutoff(CUTOFF)
    del raw
    store = Store(uri)
    publish_snapshot(store, snapshot)
    seconds = time.perf_counter() - started
    publish_untrained_model(store, build_graph(snapshot, edges_until(snapshot, CUTOFF),
                                                 now=CUTOFF), HIDDEN, CUTOFF)
    return seconds


def serve_lookups(uri: str, repeats: int = 20) -> dict:
    """Two Serve replicas (one per node) answering 1k-id lookups over HTTP."""
    import httpx
    from ray import serve

    from bc_ray.consumer.reader import read_embeddings
    from bc_ray.serve.app import CompatibilityService
    from bc_ray.serve.config import ServeConfig
    from tests.conftest import free_port

    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    options = ServeConfig(store=uri, num_replicas=2).deployment_options()
    started = time.perf_counter()
    serve.run(CompatibilityService.options(
        **options, max_replicas_per_node=1,
        ray_actor_options={"num_cpus": 0.5}).bind(store=uri),
        name="two-nodes", route_prefix="/")
    ready_s = time.perf_counter() - started
    ids = read_embeddings(uri, "user")["id"].sample(1000, seed=0).to_list()
    url = f"http://127.0.0.1:{port}/v1/embeddings"
    with httpx.Client(timeout=60) as client:
        client.post(url, json={"entity": "user", "ids": ids}).raise_for_status()
        started = time.perf_counter()
        for _ in range(repeats):
            answer = client.post(url, json={"entity": "user", "ids": ids})
        lookup_s = (time.perf_counter() - started) / repeats
    from ray._private.state import actors  # the public state API needs a dashboard

    nodes = sorted({info["Address"]["NodeID"] for info in actors().values()
                    if "ServeReplica" in info["ActorClassName"] and info["State"] == "ALIVE"})
    found = sum(answer.json()["found"])
    serve.shutdown()
    return {"ready_s": ready_s, "lookup_s": lookup_s, "found": found, "nodes": nodes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--edges", type=int, default=10_000_000)
    args = parser.parse_args()
    import ray
    import ray.data
    from ray.cluster_utils import Cluster

    server, uri = start_s3()
    work = scratch_dir("bench-two-nodes-")
    cluster = Cluster(initialize_head=True, head_node_args={**NODE, "include_dashboard": False})
    cluster.add_node(**NODE)
    cluster.wait_for_nodes()
    try:
        ray.init(address=cluster.address, log_to_driver=False, logging_level=logging.WARNING)
        nodes = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])
        ray.data.range(1).materialize()  # a long-lived cluster: Ray Data's own actors run
        publish_s = publish(uri, args.edges)
        print(f"snapshot and model published to S3 ({publish_s:.1f}s to build and publish)",
              flush=True)
        stats, driver_peak = in_fresh_process(ray_refresh, cluster.address, uri, "full")
        plain_s, plain_peak = in_fresh_process(plain_refresh, uri, f"{work}/plain-refresh")
        served = serve_lookups(uri)
    finally:
        ray.shutdown()
        cluster.shutdown()
        server.stop()
    rows = [
        ["full refresh", stats["seconds"], plain_s, stats["seconds"] / plain_s,
         f"driver {driver_peak / MB:,.0f} MB, plain {plain_peak / MB:,.0f} MB",
         f"tasks on {len(stats['worker_nodes'])} of {len(nodes)} nodes, "
         f"{sum(stats['rows'].values()):,} rows"],
        ["Serve lookup of 1000 ids (HTTP)", served["lookup_s"], float("nan"), float("nan"),
         "-", f"replicas on {len(served['nodes'])} of {len(nodes)} nodes, "
              f"{served['found']} found; ready in {served['ready_s']:.1f}s"],
    ]
    print_table(f"Two nodes, store on S3: {args.edges:,} edges (2 layers, hidden {HIDDEN})",
                ["stage", "two nodes s", "plain s", "ratio", "peak memory", "note"], rows)
    assert stats["worker_nodes"] == nodes, "the refresh did not run on both nodes"
    assert served["nodes"] == nodes, "Serve's replicas did not run on both nodes"
    write_json("two_nodes", {"edges": args.edges, "nodes": nodes, "publish_s": publish_s,
                             "refresh": stats, "driver_peak_mb": driver_peak / MB,
                             "plain_s": plain_s, "plain_peak_mb": plain_peak / MB,
                             "serve": served})


if __name__ == "__main__":
    main()
