"""Training with the ID tables and the graph sharded across workers, beside the replicated loop,
at 1, 2 and 4 workers on the same graph: edges/s and peak memory per worker.

Both loops run the same BC-Aligner steps on Ray Train (DDP over gloo; batch 2,048 triples,
fanout 10, 2 layers, hidden 64, alignment to random 64-wide targets standing in for z_{k-1}):

- replicated (`bc-ray train` today): every worker loads the whole snapshot, builds the whole CSR,
  holds the whole ID tables with Adam's moments (row-sparse) and every node's target;
- sharded (`bc_ray/train/sharded.py`): the driver counts degrees with Ray tasks and gives each
  worker a range of users and of items; a worker streams the edge files keeping its own nodes'
  edges, holds their CSR rows, ID rows, Adam moments and targets, and gets everything else
  through all-to-alls (neighbour draws, ID rows and their gradients, targets).

Per worker: edges/s over the timed steps, the setup time (loading), "peak" resident memory
(VmHWM) and "private" (RssAnon, sampled every 0.1 s), "floor" (private memory of the Ray Train
worker with the libraries imported, before loading anything), "after setup" (private memory
once loaded, before the first step: the rest of the peak is the steps' working set, which
depends on the batch and fanout, not on the graph's share), and "must hold": its CSR (8 bytes
per edge end and row), ID rows with two Adam moments (12 d bytes per row) and targets (4 d' per
row), the whole graph's for the replicated loop. The machine has 2 cores, so 4 workers share
them: edges/s per worker falls for both loops; the ratio between them is the comparison.

    python benchmarks/bench_sharded_train.py [--edges 3000000] [--workers 1,2,4] [--steps 40]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from bc_ray.store.store import Store  # noqa: E402
from benchmarks.bench_scale import CUTOFF, HIDDEN, MB  # noqa: E402
from benchmarks.common import print_table, scratch_dir, write_json  # noqa: E402

PREVIOUS_DIM = 64
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def worker(config: dict) -> None:
    """One rank of either loop; reports its own numbers, gathered on rank 0."""
    import ray.train
    import torch
    from ray.train.torch import prepare_model
    from torch.nn.parallel import DistributedDataParallel

    from bc_ray.core.row_shards import ShardedRows
    from bc_ray.core.trainer import Alignment, ShardedAlignment, VersionTrainer
    from bc_ray.core.transforms import make_transform
    from bc_ray.train.loop import gathered
    from bc_ray.train.sharded import ShardedRun, row_bytes, sharded_trainer
    from benchmarks.bench_scale import OwnMemory

    run: ShardedRun = config["run"]
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    nodes = run.owners.num_users + run.owners.num_items
    transform = make_transform("linear", run.spec.output_dim, PREVIOUS_DIM)
    mask = torch.ones(nodes, dtype=torch.bool)
    width = row_bytes(run.spec, PREVIOUS_DIM)
    with OwnMemory() as memory:
        started = time.perf_counter()
        floor = _private()
        if config["mode"] == "sharded":
            owned = run.owners.num_rows(rank)
            targets = ShardedRows(run.owners, torch.randn(owned, PREVIOUS_DIM))
            trainer = sharded_trainer(run, rank, world, ShardedAlignment(transform, targets,
                                                                         mask))
            holds = trainer.task.rows.nbytes + width * owned
            ignored: list[str] = []
        else:
            from bc_ray.core.graph import build_graph
            from bc_ray.data.timeline import edges_until
            from bc_ray.models.graphsage.model import build_model
            from bc_ray.store.snapshots import load_snapshot
            from bc_ray.store.store import Store

            snapshot = load_snapshot(Store(run.files.store_uri))
            graph = build_graph(snapshot, edges_until(snapshot, run.now), now=run.now)
            del snapshot
            alignment = Alignment(transform, torch.randn(nodes, PREVIOUS_DIM), mask)
            trainer = VersionTrainer(build_model(run.spec, graph), graph, run.train, alignment,
                                     rank=rank, world_size=world)
            adjacency = graph.adjacency()
            holds = 8 * (adjacency.nnz + nodes) + width * nodes
            ignored = trainer.sparse_parameter_names()
        if world > 1:
            DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(trainer.joint,
                                                                                ignored)
            trainer.module = prepare_model(trainer.joint, move_to_device=False)
        setup, after_setup = time.perf_counter() - started, _private()
        stats = trainer.run_epoch(1)
    with open("/proc/self/status") as status:
        peak = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmHWM:"))
    mine = {"edges_per_s": stats["edges"] / stats["seconds"], "setup_s": setup,
            "steps": stats["steps"], "peak_mb": peak / MB, "private_mb": memory.peak_anon / MB,
            "floor_mb": floor / MB, "setup_private_mb": after_setup / MB,
            "must_hold_mb": holds / MB, "loss": stats["loss"]}
    checkpoint = ray.train.Checkpoint.from_directory(tempfile.mkdtemp()) if rank == 0 else None
    ray.train.report({"ranks": gathered(json.dumps(mine))}, checkpoint=checkpoint)


def _private() -> int:
    """This process's private resident memory now (RssAnon), bytes."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status
                    if line.startswith("RssAnon:"))


def synthetic_store(scratch: str, edges: int) -> tuple[Store, int, int]:
    """A store in `scratch` holding a synthetic snapshot of `edges` interactions (cut at
    CUTOFF): (the store, its users, its items)."""
    from bc_ray.data.snapshot import build_snapshot
    from bc_ray.data.synthetic import SyntheticConfig, generate
    from bc_ray.store.snapshots import publish_snapshot

    snapshot = build_snapshot(generate(SyntheticConfig(
        num_users=edges // 10, num_items=edges // 100, num_edges=edges))).with_cutoff(CUTOFF)
    store = Store(f"file://{scratch}/store")
    publish_snapshot(store, snapshot)
    return store, snapshot.num_users, snapshot.num_items


def one_run(run, mode: str, workers: int, storage: str) -> list[dict]:
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    result = TorchTrainer(
        worker, train_loop_config={"run": run, "mode": mode},
        scaling_config=ScalingConfig(num_workers=workers, resources_per_worker={"CPU": 1}),
        run_config=RunConfig(name=f"{mode}-{workers}", storage_path=storage)).fit()
    if result.error is not None:
        raise result.error
    return [json.loads(rank) for rank in result.metrics["ranks"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--edges", type=int, default=3_000_000)
    parser.add_argument("--workers", default="1,2,4")
    parser.add_argument("--steps", type=int, default=40, help="timed steps per worker")
    parser.add_argument("--replicated-up-to", type=int, default=4,
                        help="run the replicated loop only up to this many workers (it holds "
                             "the whole graph per worker)")
    args = parser.parse_args()
    counts = [int(w) for w in args.workers.split(",")]
    import ray

    from bc_ray.core.train_config import TrainConfig
    from bc_ray.models.graphsage.spec import VersionSpec
    from bc_ray.partition.edge_files import EdgeFiles
    from bc_ray.train.sharded import ShardedRun, plan_owners, row_bytes

    scratch = scratch_dir("bench-sharded-train-")
    store, num_users, num_items = synthetic_store(scratch, args.edges)
    ray.init(address="local", num_cpus=max(counts), include_dashboard=False,
             log_to_driver=False, logging_level=logging.WARNING,
             runtime_env={"env_vars": {"PYTHONPATH": ROOT}})
    files = EdgeFiles.of(store, store.state(), num_users, num_items)
    spec = VersionSpec(num_layers=2, hidden_dim=HIDDEN)
    train = TrainConfig(batch_size=2048, fanout=10, mode="sampled", sparse_ids_min_nodes=0,
                        max_steps=args.steps)
    rows = []
    started = time.perf_counter()
    for workers in counts:
        owners = plan_owners(files, workers, row_bytes(spec, PREVIOUS_DIM))
        run = ShardedRun(files, owners, spec, train, CUTOFF)
        for mode in ("replicated", "sharded"):
            if mode == "replicated" and workers > args.replicated_up_to:
                continue
            ranks = one_run(run, mode, workers, f"{scratch}/_train")
            rows.append({"edges": args.edges, "nodes": num_users + num_items,
                         "workers": workers, "mode": mode,
                         "edges_per_s_per_worker": sum(r["edges_per_s"] for r in ranks) / workers,
                         "edges_per_s_total": sum(r["edges_per_s"] for r in ranks),
                         "setup_s_max": max(r["setup_s"] for r in ranks),
                         "peak_mb_max": max(r["peak_mb"] for r in ranks),
                         "private_mb_max": max(r["private_mb"] for r in ranks),
                         "floor_mb_max": max(r["floor_mb"] for r in ranks),
                         "setup_private_mb_max": max(r["setup_private_mb"] for r in ranks),
                         "must_hold_mb_max": max(r["must_hold_mb"] for r in ranks),
                         "ranks": ranks})
            print(f"  {workers} x {mode}: {rows[-1]['edges_per_s_per_worker']:,.0f} edges/s "
                  f"per worker, private peak {rows[-1]['private_mb_max']:,.0f} MB, must hold "
                  f"{rows[-1]['must_hold_mb_max']:,.0f} MB", flush=True)
            write_json("sharded-train", {"steps": args.steps, "results": rows})
    ray.shutdown()
    by = {(r["workers"], r["mode"]): r for r in rows}
    print_table(f"Training per worker, replicated vs sharded ({args.edges:,} edges, "
                f"{num_users + num_items:,} nodes, {args.steps} steps of 2,048, "
                f"{os.cpu_count()} cores; MB; {time.perf_counter() - started:.0f}s in all)",
                ["workers", "loop", "edges/s per worker", "edges/s total", "vs replicated",
                 "setup s", "peak", "private", "floor", "after setup", "must hold",
                 "private vs 1 sharded"],
                [[r["workers"], r["mode"], f"{r['edges_per_s_per_worker']:,.0f}",
                  f"{r['edges_per_s_total']:,.0f}",
                  (r["edges_per_s_total"] / by[(r["workers"], "replicated")]["edges_per_s_total"]
                   if (r["workers"], "replicated") in by else "-"),
                  r["setup_s_max"], f"{r['peak_mb_max']:,.0f}", f"{r['private_mb_max']:,.0f}",
                  f"{r['floor_mb_max']:,.0f}", f"{r['setup_private_mb_max']:,.0f}",
                  f"{r['must_hold_mb_max']:,.0f}",
                  (r["private_mb_max"] / by[(counts[0], "sharded")]["private_mb_max"]
                   if r["mode"] == "sharded" else "-")] for r in rows])


if __name__ == "__main__":
    main()
