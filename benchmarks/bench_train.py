"""Training throughput of the Ray Train path against the same loop in one plain process.

Same snapshot, same spec, same epochs. Edges/s counts the triples of an epoch over its compute
time (measured inside the loop, so Ray's start-up is excluded and reported on its own).

    python benchmarks/bench_train.py [--edges 100000] [--epochs 6] [--mode sampled]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from benchmarks.common import print_table, scratch_dir, write_json  # noqa: E402
from bc_ray.core.methods import get_method  # noqa: E402
from bc_ray.models.graphsage.spec import VersionSpec  # noqa: E402
from bc_ray.core.train_config import TrainConfig  # noqa: E402
from bc_ray.core.version import prepare_trainer  # noqa: E402
from bc_ray.data.snapshot import build_snapshot  # noqa: E402
from bc_ray.data.synthetic import SyntheticConfig, generate  # noqa: E402
from bc_ray.store.snapshots import publish_snapshot  # noqa: E402
from bc_ray.store.store import Store  # noqa: E402
from bc_ray.train.config import GateConfig, TrainJobConfig  # noqa: E402
from bc_ray.train.inputs import load_inputs  # noqa: E402


def steady_rate(history: list[dict], workers: int) -> float:
    """Edges/s over the epochs after the first (warm-up), summed over workers."""
    steady = history[1:] or history
    return sum(h["edges"] for h in steady) * max(workers, 1) / sum(h["seconds"] for h in steady)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--edges", type=int, default=100_000)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--mode", choices=("auto", "full", "sampled"), default="auto",
                        help="training mode (sampled: neighbour-sampled mini-batches)")
    args = parser.parse_args()
    import ray

    from bc_ray.train.job import run_training

    uri = f"file://{scratch_dir('bench-train-')}/store"
    snapshot = build_snapshot(generate(SyntheticConfig(
        num_users=args.edges // 50, num_items=args.edges // 70, num_edges=args.edges)))
    publish_snapshot(Store(uri), snapshot.with_cutoff(0.9))
    train = TrainConfig(epochs=args.epochs, batch_size=4096, eval_every=args.epochs,
                        warmup_epochs=0, mode=args.mode)
    job = TrainJobConfig(store=uri, spec=VersionSpec(hidden_dim=args.hidden), train=train,
                         gate=GateConfig(min_recall=0.0), num_workers=0)

    torch.set_num_threads(os.cpu_count() or 1)
    inputs = load_inputs(job)
    trainer = prepare_trainer(get_method("non-bc"), inputs.spec, inputs.split.graph, train, None)
    history = [trainer.run_epoch(epoch) for epoch in range(1, args.epochs + 1)]
    plain = steady_rate(history, 1)
    rows = [["plain process", "-", plain, 1.0, "-"]]
    results = {"plain_edges_per_s": plain}

    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False,
             log_to_driver=False)
    for workers in (1, 2):
        started = time.perf_counter()
        outcome = run_training(dataclasses.replace(
            job, num_workers=workers, cpus_per_worker=(os.cpu_count() or 2) / workers))
        wall = time.perf_counter() - started
        rate = outcome.metrics["edges_per_second"]
        rows.append(["Ray Train DDP", workers, rate, rate / plain,
                     f"{wall - outcome.metrics['train_seconds']:.0f}s"])
        results[f"ray_{workers}_workers_edges_per_s"] = rate
        results[f"ray_{workers}_workers_wall_s"] = wall
    print_table(f"Training throughput ({args.edges} edges, {args.mode} mode, hidden "
                f"{args.hidden}, {args.epochs} epochs, {os.cpu_count()} CPUs)",
                ["path", "workers", "edges/s", "ratio vs plain", "start-up + driver"], rows)
    write_json("train_throughput", results)


if __name__ == "__main__":
    main()
