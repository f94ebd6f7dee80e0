"""Refresh of any model family, in one run on one graph (synthetic, 1M interactions by default):

1. a nightly refresh as a new job against the plainest single-process job doing the same work,
   each a new process timed from its start to its result: `jobs/refresh.py --full` on the
   running cluster (connect, start the task processes, read the snapshot, embed on Ray Data,
   write Parquet, commit) against one process that imports what it needs, reads the snapshot
   and the model from the store, runs the family's own `embed_inputs` + `embed` over every
   entity in one call and writes both tables to Parquet;
2. inside one driver: the Ray Data refresh (every stage, the Parquet write and the commit)
   against the plain embed step alone (`ModelFamily.embed` over `embed_inputs`, no I/O): the
   driver's first refresh, whose task processes start and import torch, and a later one, whose
   processes are warm;
3. incremental against full after ~1% new interactions, with the fraction of entities
   re-embedded (`ModelFamily.affected`).

Ray's cluster start is excluded (a nightly job joins a running cluster). The model is untrained:
embedding speed does not depend on the weights.

    python benchmarks/bench_family_refresh.py --model sequence [--edges 1000000] [--spec ...]
"""

from __future__ import annotations

import argparse
import os
import subprocess
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


def plain_job(uri: str, out: str) -> None:
    """The single-process nightly job: the store's snapshot and model in, both tables out."""
    import polars as pl

    from bc_ray.store.snapshots import load_snapshot
    from bc_ray.store.versions import load_model_bytes

    torch.set_num_threads(os.cpu_count() or 1)
    store = Store(uri)
    state = store.state()
    version = state.version()
    family = get_family(version.family)
    snapshot = load_snapshot(store, state=state)
    graph = build_graph(snapshot, edges_until(snapshot, snapshot.meta.cutoff),
                        now=snapshot.meta.cutoff)
    network = family.from_bytes(load_model_bytes(store, version.version, state), light=True)
    z = plain_embed(version.family, network, graph)
    os.makedirs(out, exist_ok=True)
    for entity, rows, ids in (("user", z[: graph.num_users], snapshot.users["id"]),
                              ("item", z[graph.num_users:], snapshot.items["id"])):
        pl.DataFrame({"id": ids, "embedding": np.asarray(rows)}).write_parquet(
            os.path.join(out, f"{entity}.parquet"))


def new_process_seconds(argv: list[str], repeat: int = 2) -> float:
    """Best wall time of `argv` as a new process, from its start to its exit."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
        best = min(best, time.perf_counter() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="sequence")
    parser.add_argument("--spec", default=None)
    parser.add_argument("--edges", type=int, default=1_000_000)
    parser.add_argument("--new-fraction", type=float, default=0.01)
    parser.add_argument("--plain-job", nargs=2, metavar=("STORE", "OUT"),
                        help=argparse.SUPPRESS)  # the plain job's own process
    args = parser.parse_args()
    if args.plain_job:
        plain_job(*args.plain_job)
        return
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
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    plain_job_s = new_process_seconds(
        [sys.executable, os.path.abspath(__file__), "--plain-job", uri,
         scratch_dir("bench-family-refresh-plain-")])
    ray_job_s = new_process_seconds(
        [sys.executable, os.path.join(root, "jobs", "refresh.py"), "--store", uri, "--full",
         "--address", ray.get_runtime_context().gcs_address])
    print_table(f"A nightly refresh as a new process, from its start to its result "
                f"({graph.num_nodes} entities, best of 2)",
                ["job", "seconds", "time vs plain (target <= 1.5)"],
                [["plain: one process reads, embeds, writes Parquet", plain_job_s, 1.0],
                 ["bc-ray refresh --full: a new Ray job on the running cluster", ray_job_s,
                  ray_job_s / plain_job_s]])
    ray.data.range(1).materialize()  # a long-lived cluster has Ray Data's own actors running
    full = run_refresh(RefreshConfig(store=uri, mode="full"))
    advance_snapshot(Store(uri), cutoff + args.new_fraction)
    started = time.perf_counter()
    incremental = run_refresh(RefreshConfig(store=uri, mode="incremental"))
    incremental_s = time.perf_counter() - started
    again = run_refresh(RefreshConfig(store=uri, mode="full"))
    nodes = graph.num_nodes
    rows = [["plain embed of every entity (1 process)", plain_s, nodes / plain_s, 1.0],
            ["Ray Data full refresh, the driver's first (embed, write, commit)",
             full.stats["seconds"],
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
        "entities": nodes, "plain_job_s": plain_job_s, "new_job_s": ray_job_s,
        "plain_s": plain_s, "driver_first_s": full.stats["seconds"],
        "full_s": again.stats["seconds"], "incremental_s": incremental_s,
        "incremental_mode": incremental.mode, "full_stats": full.stats,
        "incremental_stats": incremental.stats})


if __name__ == "__main__":
    main()
