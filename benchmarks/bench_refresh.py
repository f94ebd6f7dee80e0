"""Refresh speed, in one run on one graph (synthetic, 1M edges by default):

1. the Ray Data job (layer-wise, a task per run of nodes) against plain single-process layer-wise
   inference;
2. layer-wise against neighbour-sampled inference (both plain, same model);
3. incremental against full after ~1% new edges, with the fraction of nodes affected.

Ray's cluster start (and Ray Data's per-cluster actors) is excluded; the job's own stages
(worker start-up included) are not.

    python benchmarks/bench_refresh.py [--edges 1000000] [--hidden 64]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")

from benchmarks.common import print_table, scratch_dir, timed, write_json  # noqa: E402
from tests.helpers import publish_untrained_model  # noqa: E402
from bc_ray.core.graph import build_graph  # noqa: E402
from bc_ray.models.graphsage.inference import layerwise_embed, sampled_embed  # noqa: E402
from bc_ray.data.snapshot import build_snapshot  # noqa: E402
from bc_ray.data.synthetic import SyntheticConfig, generate  # noqa: E402
from bc_ray.data.timeline import edges_until  # noqa: E402
from bc_ray.store.snapshots import advance_snapshot, publish_snapshot  # noqa: E402
from bc_ray.store.store import Store  # noqa: E402


def setup(edges: int, hidden: int, cutoff: float) -> tuple[str, object, object]:
    """A store with the snapshot and an (untrained: speed does not depend on the weights)
    version 0 model."""
    uri = f"file://{scratch_dir('bench-refresh-')}/store"
    snapshot = build_snapshot(generate(SyntheticConfig(
        num_users=edges // 10, num_items=edges // 20, num_edges=edges))).with_cutoff(cutoff)
    store = Store(uri)
    publish_snapshot(store, snapshot)
    graph = build_graph(snapshot, edges_until(snapshot, cutoff), now=cutoff)
    return uri, snapshot, publish_untrained_model(store, graph, hidden, cutoff)[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--edges", type=int, default=1_000_000)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--new-fraction", type=float, default=0.01)
    args = parser.parse_args()
    import ray
    import ray.data

    from bc_ray.refresh.config import RefreshConfig
    from bc_ray.refresh.job import run_refresh

    cutoff = 0.9
    uri, snapshot, model = setup(args.edges, args.hidden, cutoff)
    graph = build_graph(snapshot, edges_until(snapshot, cutoff), now=cutoff)
    torch.set_num_threads(os.cpu_count() or 1)
    plain_s, _ = timed(lambda: layerwise_embed(model, graph), repeat=2)
    sampled_s, _ = timed(lambda: sampled_embed(model, graph, fanout=10, chunk=1024))

    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False,
             log_to_driver=False)
    ray.data.range(1).materialize()  # a long-lived cluster has Ray Data's own actors running
    full = run_refresh(RefreshConfig(store=uri, mode="full"))
    full_compute = (full.stats["layer1"]["compute_seconds"]
                    + full.stats["layer2+write"]["compute_seconds"])
    advance_snapshot(Store(uri), cutoff + args.new_fraction)
    started = time.perf_counter()
    incremental = run_refresh(RefreshConfig(store=uri, mode="incremental"))
    incremental_s = time.perf_counter() - started
    again = run_refresh(RefreshConfig(store=uri, mode="full"))
    fraction = incremental.stats["affected_fraction"]
    nodes = graph.num_nodes
    rows = [
        ["plain layer-wise (1 process)", plain_s, nodes / plain_s, 1.0],
        ["Ray Data layer-wise: task compute per slot (start-up excluded)", full_compute,
         nodes / full_compute, full_compute / plain_s],
        ["Ray Data full refresh job (all stages, write, commit)", full.stats["seconds"],
         nodes / full.stats["seconds"], full.stats["seconds"] / plain_s],
        ["plain neighbour-sampled (fanout 10, batches of 1024)", sampled_s, nodes / sampled_s,
         sampled_s / plain_s],
    ]
    print_table(f"Refresh of {nodes} nodes ({args.edges} edges, 2 layers, hidden {args.hidden},"
                f" {os.cpu_count()} CPUs)", ["path", "seconds", "nodes/s", "time vs plain"],
                rows)
    ratio = incremental_s / again.stats["seconds"]
    print_table(f"Incremental after {args.new_fraction:.0%} new edges",
                ["full s", "incremental s", "time ratio", "affected fraction",
                 "target (1.3 x fraction + 0.1)"],
                [[again.stats["seconds"], incremental_s, ratio, fraction, 1.3 * fraction + 0.1]])
    write_json("refresh", {"nodes": nodes, "plain_s": plain_s, "sampled_s": sampled_s,
                           "ray_layers_s": full_compute, "ray_job_s": full.stats["seconds"],
                           "full_s": again.stats["seconds"], "incremental_s": incremental_s,
                           "affected_fraction": fraction, "full_stats": full.stats,
                           "incremental_stats": incremental.stats})


if __name__ == "__main__":
    main()
