"""The nightly path on a two-node Ray cluster (two raylets on this machine, 3 CPUs each) with the
store on S3: ingest, train with 2 workers, refresh with 2 task slots, serve with 2 replicas, then
a sharded bump whose 2 workers each hold their share of the graph and the ID tables.

Run by test_two_nodes.py in its own process (the test session's shared cluster stays up).
Prints one JSON line: the node ids each kind of work ran on, and what each step produced.

    python -m tests.cluster.two_nodes s3://bucket/store
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import httpx
import ray
from ray import serve
from ray.cluster_utils import Cluster

from bc_ray.consumer.reader import read_embeddings
from bc_ray.models.graphsage.spec import VersionSpec
from bc_ray.core.train_config import TrainConfig
from bc_ray.data.snapshot import build_snapshot
from bc_ray.data.synthetic import SyntheticConfig, generate
from bc_ray.refresh.config import RefreshConfig
from bc_ray.refresh.job import run_refresh
from bc_ray.serve.app import CompatibilityService
from bc_ray.serve.config import ServeConfig
from bc_ray.store.snapshots import publish_snapshot
from bc_ray.store.store import Store
from bc_ray.train.config import GateConfig, TrainJobConfig
from bc_ray.train.job import run_training
from tests.conftest import free_port

REPO = Path(__file__).resolve().parents[2]
# Work sized to fit one task per node: two 2-CPU workers or actors cannot share a 3-CPU node.
NODE = {"num_cpus": 3, "resources": {"slot": 1}}


def actor_nodes(fragment: str) -> list[str]:
    """Nodes of every actor (alive or finished) whose class name contains `fragment`."""
    from ray._private.state import actors  # the GCS actor table; the public API needs a dashboard

    return sorted({info["Address"]["NodeID"] for info in actors().values()
                   if fragment in info["ActorClassName"]})


def main(uri: str) -> None:
    cluster = Cluster(initialize_head=True,
                      head_node_args={**NODE, "include_dashboard": False})
    cluster.add_node(**NODE)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
    report: dict = {"nodes": sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])}
    try:
        raw = generate(SyntheticConfig(num_users=400, num_items=120, num_edges=6000))
        publish_snapshot(Store(uri), build_snapshot(raw).with_cutoff(0.8))

        trained = run_training(TrainJobConfig(
            store=uri, num_workers=2, cpus_per_worker=2, spec=VersionSpec(hidden_dim=16),
            train=TrainConfig(epochs=2, batch_size=512, eval_every=2, warmup_epochs=0),
            gate=GateConfig(min_recall=0.0)))
        report["train"] = {"status": trained.status, "nodes": actor_nodes("RayTrainWorker"),
                           "worker_nodes": trained.metrics.get("worker_nodes")}

        refreshed = run_refresh(RefreshConfig(store=uri, mode="full", num_tasks=2,
                                              cpus_per_task=2, block_nodes=64))
        # The inference tasks' own node ids, reported with the files each one wrote.
        report["refresh"] = {"rows": refreshed.stats["rows"],
                             "nodes": refreshed.stats["worker_nodes"]}

        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        options = ServeConfig(store=uri, num_replicas=2).deployment_options()
        serve.run(CompatibilityService.options(
            **options, ray_actor_options={"num_cpus": 0, "resources": {"slot": 1}}).bind(
            store=uri), name="two-nodes", route_prefix="/")
        user = read_embeddings(uri, "user")["id"][0]
        deadline = time.time() + 60
        while httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code != 200:
            if time.time() > deadline:
                raise RuntimeError("Serve never became ready")
            time.sleep(0.5)
        answer = httpx.post(f"http://127.0.0.1:{port}/v1/embeddings",
                            json={"entity": "user", "ids": [user]}, timeout=10)
        report["serve"] = {"status": answer.status_code, "body": answer.json(),
                           "nodes": actor_nodes("ServeReplica")}
        serve.shutdown()

        # Each worker reads its own edges and its rows of the stored ver-0 tables from S3 and
        # exchanges ID rows, neighbours and gradients with the other node over gloo.
        bumped = run_training(TrainJobConfig(
            store=uri, num_workers=2, cpus_per_worker=2, sharded=True, targets="stored",
            train=TrainConfig(epochs=2, batch_size=256, fanout=5, edges_per_epoch=1024,
                              eval_every=1, warmup_epochs=0, warm_start="mean"),
            max_eval_users=0,
            gate=GateConfig(max_align_error_rel=5.0, min_recall_vs_parent=0.0)))
        report["sharded"] = {"status": bumped.status, "reasons": bumped.reasons,
                             "worker_nodes": bumped.metrics.get("worker_nodes"),
                             "worker_graph_bytes": bumped.metrics.get("worker_graph_bytes")}
    finally:
        ray.shutdown()
        cluster.shutdown()
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    main(sys.argv[1])
