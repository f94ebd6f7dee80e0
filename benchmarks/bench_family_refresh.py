"""Refresh of any model family, in one run on one graph (synthetic, 1M interactions by default):

1. the Ray Data refresh job (full: every stage, the Parquet write and the commit) against a plain
   single-process embed of every user and item with the same model (`ModelFamily.embed` over
   `embed_inputs`, the same code the tasks run, in one process and one call): a job's first
   refresh, whose task processes start and import torch, and a later one, whose processes are
   warm (the scheduler submits each nightly refresh as a new job: the first is what it pays);
2. incremental against full after ~1% new interactions, with the fraction of entities
   re-embedded (`ModelFamily.affected`).

Ray's cluster start is excluded from both; the job's own stages (worker start-up included) are
not. The model is untrained: embedding speed does not depend on the weights.

    python benchmarks/bench_family_refresh.py --model sequence [--edges 1000000] [--spec ...]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")

from benchmarks.common import print_table, scratch_dir, timed, write_json  # noqa: E402
from bc_ray.core.family import Vocabularies  # noqa: E402
from bc_ray.core.graph import build_graph  # noqa: E402
from bc_ray.core.registry import get_family  # noqa: E402
from bc_ray.data.snapshot import build_snapshot  # noqa: E402
from bc_ray.data.synthetic import SyntheticConfig, generate  # noqa: E402
from bc_ray.data.timeline import edges_until  # noqa: E402
from bc_ray.store.snapshots import advance_snapshot, publish_snapshot  # noqa: E402
from bc_ray.store.store import Store  # noqa: E402
from bc_ray.store.versions import Candidate, publish_version, register_candidate  # noqa: E402


def setup(model: str, spec_text: str | None, edges: int, cutoff: float):
    """A store with the snapshot and an untrained version 0 of `model`; (uri, graph, model)."""
    family = get_family(model)
    spec = family.parse_spec(spec_text) if spec_text else family.default_spec()
    uri = f"file://{scratch_dir('bench-family-refresh-')}/store"
    snapshot = build_snapshot(generate(SyntheticConfig(
        num_users=edges // 10, num_items=edges // 20, num_edges=edges))).with_cutoff(cutoff)
    store = Store(uri)
    publish_snapshot(store, snapshot)
    graph = build_graph(snapshot, edges_until(snapshot, cutoff), now=cutoff)
    torch.manual_seed(0)
    network = family.build(spec, Vocabularies.of(graph)).eval()
    record = register_candidate(store, Candidate(
        parent=None, dim=spec.output_dim, method="non-bc", spec=spec.to_dict(),
        snapshot_id=store.state().current_snapshot, cutoff=cutoff,
        model=family.to_bytes(network), transform=None, family=model))
    publish_version(store, record.version)
    return uri, graph, family.from_bytes(family.to_bytes(network), light=True)


def plain_embed(model: str, network, graph) -> np.ndarray:
    """Every entity in one process: the family's own inputs and embed step, one call."""
    family = get_family(model)
    inputs = family.embed_inputs(network.spec, graph)
    with torch.no_grad():
        return family.embed(network, inputs, np.arange(graph.num_nodes, dtype=np.int64))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="sequence")
    parser.add_argument("--spec", default=None)
    parser.add_argument("--edges", type=int, default=1_000_000)
    parser.add_argument("--new-fraction", type=float, default=0.01)
    args = parser.parse_args()
    import ray
    import ray.data

    from bc_ray.refresh.config import RefreshConfig
    from bc_ray.refresh.job import run_refresh

    cutoff = 0.9
    uri, graph, network = setup(args.model, args.spec, args.edges, cutoff)
    torch.set_num_threads(os.cpu_count() or 1)
    plain_s, _ = timed(lambda: plain_embed(args.model, network, graph), repeat=2)

    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False,
             log_to_driver=False)
    ray.data.range(1).materialize()  # a long-lived cluster has Ray Data's own actors running
    full = run_refresh(RefreshConfig(store=uri, mode="full"))
    advance_snapshot(Store(uri), cutoff + args.new_fraction)
    started = time.perf_counter()
    incremental = run_refresh(RefreshConfig(store=uri, mode="incremental"))
    incremental_s = time.perf_counter() - started
    again = run_refresh(RefreshConfig(store=uri, mode="full"))
    nodes = graph.num_nodes
    rows = [["plain embed of every entity (1 process)", plain_s, nodes / plain_s, 1.0],
            ["Ray Data full refresh, a new job (embed, write, commit)", full.stats["seconds"],
             nodes / full.stats["seconds"], full.stats["seconds"] / plain_s],
            ["the same, the job's third refresh (task processes warm)",
             again.stats["seconds"], nodes / again.stats["seconds"],
             again.stats["seconds"] / plain_s]]
    print_table(f"{args.model} refresh of {nodes} entities ({args.edges} interactions, "
                f"{network.spec}, {os.cpu_count()} CPUs)",
                ["path", "seconds", "entities/s", "time vs plain (target <= 1.5)"], rows)
    print_table(f"Incremental after {args.new_fraction:.0%} new interactions",
                ["full s", "incremental s", "time ratio", "affected fraction", "mode"],
                [[again.stats["seconds"], incremental_s, incremental_s / again.stats["seconds"],
                  incremental.stats["affected_fraction"], incremental.mode]])
    write_json(f"family-refresh-{args.model}", {
        "model": args.model, "spec": network.spec.to_dict(), "edges": args.edges,
        "entities": nodes, "plain_s": plain_s, "ray_job_s": full.stats["seconds"],
        "full_s": again.stats["seconds"], "incremental_s": incremental_s,
        "incremental_mode": incremental.mode, "full_stats": full.stats,
        "incremental_stats": incremental.stats})


if __name__ == "__main__":
    main()
