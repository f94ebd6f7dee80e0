"""The refresh on a three-node Ray cluster whose nodes each give a task less memory than an
unpartitioned refresh task must hold (Ray's `memory` resource, scaled down with the graph).

Run by test_memory_limited.py in its own process (the test session's shared cluster stays up).
Prints one JSON line: what the unpartitioned refresh answered, and what the partitioned one
(its count chosen by the refresh) wrote, where its tasks ran and how far its rows are from a
plain in-process layer-wise pass.

    python -m tests.cluster.memory_limited file:///tmp/store
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import ray
from ray.cluster_utils import Cluster

from bc_ray.consumer.reader import read_embeddings
from bc_ray.core.graph import build_graph
from bc_ray.data.snapshot import build_snapshot
from bc_ray.data.synthetic import SyntheticConfig, generate
from bc_ray.data.timeline import edges_until
from bc_ray.exceptions import ConfigError
from bc_ray.models.graphsage.inference import layerwise_embed
from bc_ray.refresh.config import RefreshConfig
from bc_ray.refresh.job import run_refresh
from bc_ray.refresh.sizing import GraphSize
from bc_ray.store.snapshots import publish_snapshot
from bc_ray.store.store import Store
from tests.helpers import publish_untrained_model

REPO = Path(__file__).resolve().parents[2]
NODES, HIDDEN = 3, 16


def main(uri: str) -> None:
    snapshot = build_snapshot(generate(SyntheticConfig(num_users=400, num_items=120,
                                                       num_edges=6000)))
    store = Store(uri)
    publish_snapshot(store, snapshot)
    graph = build_graph(snapshot, edges_until(snapshot, 1.0), now=1.0)
    _, model = publish_untrained_model(store, graph, HIDDEN, 1.0)
    state = store.state()
    whole = GraphSize.of(state, state.version()).unpartitioned_bytes()
    limit = int(1.5 * whole)  # below what the unpartitioned refresh needs with its headroom
    node = {"num_cpus": 1, "memory": limit}
    cluster = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    for _ in range(NODES - 1):
        cluster.add_node(**node)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": str(REPO)}})
    report: dict = {"nodes": sorted(n["NodeID"] for n in ray.nodes() if n["Alive"]),
                    "limit": limit, "unpartitioned_task_bytes": whole}
    try:
        try:
            run_refresh(RefreshConfig(store=uri, partitions=0))
            report["unpartitioned"] = "ran"
        except ConfigError as error:
            report["unpartitioned"] = str(error)
        outcome = run_refresh(RefreshConfig(store=uri))
        report["partitions"] = outcome.stats["partitions"]
        report["worker_nodes"] = outcome.worker_nodes
        expected = layerwise_embed(model, graph)[0].numpy()
        difference = 0.0
        for entity, offset in (("user", 0), ("item", graph.num_users)):
            rows = read_embeddings(uri, entity).join(
                snapshot.entities(entity).select("id", "idx"), on="id").sort("idx")
            got = np.stack(rows["embedding"].to_numpy())
            want = expected[offset + rows["idx"].to_numpy()]
            difference = max(difference, float(np.abs(got - want).max()))
            report[f"{entity}_rows"] = rows.height
        report["max_abs_difference"] = difference
        report["entities"] = {e: snapshot.entities(e).height for e in ("user", "item")}
    finally:
        ray.shutdown()
        cluster.shutdown()
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
