"""The sequence family's training on Ray Train against the same loop in one plain process.

Same snapshot, same spec, same training settings: `bc_ray.train.job.run_training` with one
worker (TorchTrainer, the version registered in a scratch store) against
`bc_ray.core.version.train_version` in this process. Both report each epoch's compute time
(`seconds` of the history, measured inside the loop: Ray's start-up and the driver's scoring are
reported on their own); the first epoch pays one-off warm-up costs and is left out, and the plain
loop runs before and after the Ray run (medians), so a change in the machine's load cancels.
Target: the Ray path takes at most 1.15x the plain process's time per epoch.

    python benchmarks/bench_sequence.py [--edges 100000] [--epochs 4] [--spec dim=64,...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from bc_ray.core.registry import get_family  # noqa: E402
from bc_ray.core.train_config import TrainConfig  # noqa: E402
from bc_ray.core.version import split_evaluator, train_version  # noqa: E402
from bc_ray.data.snapshot import build_snapshot  # noqa: E402
from bc_ray.data.synthetic import SyntheticConfig, generate  # noqa: E402
from bc_ray.store.snapshots import publish_snapshot  # noqa: E402
from bc_ray.store.store import Store  # noqa: E402
from bc_ray.train.config import GateConfig, TrainJobConfig  # noqa: E402
from bc_ray.train.inputs import load_inputs  # noqa: E402
from benchmarks.common import print_table, scratch_dir, write_json  # noqa: E402

TARGET = 1.15


def steady_seconds(history: list[dict]) -> list[float]:
    """Seconds of each epoch after the first (warm-up)."""
    return [h["seconds"] for h in (history[1:] or history)]


def plain_epochs(job: TrainJobConfig) -> list[dict]:
    """The loop in this process, on exactly what a Ray worker loads (`load_inputs`)."""
    inputs = load_inputs(job)
    outcome = train_version(inputs.method, inputs.spec, inputs.split.graph, job.train, None,
                            lambda targets: split_evaluator(inputs.split, targets),
                            item_pool=inputs.split.item_pool, family=inputs.family)
    return outcome.result.history


def ray_epochs(job: TrainJobConfig) -> tuple[list[dict], float, dict]:
    from bc_ray.train.job import run_training

    started = time.perf_counter()
    outcome = run_training(job)
    return outcome.history, time.perf_counter() - started, outcome.metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--edges", type=int, default=100_000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--spec", default="dim=64,layers=2,heads=2,max_len=50,neg=128")
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--threads", type=int, default=min(4, os.cpu_count() or 1))
    parser.add_argument("--out", default=None,
                        help="JSON file (default: sequence-train-overhead.json in bench-out/ or "
                             "BC_RAY_BENCH_OUT; the committed one is results/sequence/"
                             "train_overhead.json)")
    args = parser.parse_args()
    import ray

    spec = get_family("sequence").parse_spec(args.spec)
    uri = f"file://{scratch_dir('bench-sequence-')}/store"
    snapshot = build_snapshot(generate(SyntheticConfig(
        num_users=max(args.edges // 50, 10), num_items=max(args.edges // 70, 10),
        num_edges=args.edges)))
    publish_snapshot(Store(uri), snapshot.with_cutoff(0.9))
    train = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=3e-3,
                        eval_every=args.epochs, warmup_epochs=0)
    job = TrainJobConfig(store=uri, method="non-bc", model="sequence", spec=spec, train=train,
                         gate=GateConfig(min_recall=0.0, max_align_error_rel=1e9),
                         num_workers=1, cpus_per_worker=args.threads)

    torch.set_num_threads(args.threads)
    before = plain_epochs(job)
    ray.init(address="local", num_cpus=max(args.threads, 1), include_dashboard=False,
             log_to_driver=False)
    try:
        on_ray, wall, metrics = ray_epochs(job)
    finally:
        ray.shutdown()
    after = plain_epochs(job)  # before and after the Ray run: drift in the machine's load cancels
    plain_s = statistics.median(steady_seconds(before) + steady_seconds(after))
    ray_s = statistics.median(steady_seconds(on_ray))
    ratio = ray_s / plain_s
    rows = [["plain process (before, after)", plain_s, 1.0, "-"],
            ["Ray Train, 1 worker", ray_s, ratio, f"{wall - metrics['train_seconds']:.0f}s"]]
    print_table(f"Sequence family: seconds per epoch ({args.edges} interactions, {spec}, "
                f"batch {args.batch_size}, {args.threads} threads, {args.epochs} epochs; "
                f"target <= {TARGET}x)",
                ["path", "s/epoch (median, steady)", "ratio vs plain", "start-up + driver"], rows)
    print("wrote", write_json("sequence-train-overhead", {
        "edges": args.edges, "epochs": args.epochs, "spec": spec.to_dict(),
        "batch_size": args.batch_size, "threads": args.threads,
        "plain_epoch_seconds": [h["seconds"] for h in before + after],
        "ray_epoch_seconds": [h["seconds"] for h in on_ray],
        "plain_s_per_epoch": plain_s, "ray_s_per_epoch": ray_s, "ratio": ratio,
        "target": TARGET, "within_target": ratio <= TARGET, "ray_wall_s": wall,
        "ray_recall_at_50": metrics.get("recall_at_50")}, args.out))


if __name__ == "__main__":
    main()
