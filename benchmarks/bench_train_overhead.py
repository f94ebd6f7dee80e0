"""A small bump's wall time on a local cluster without a dashboard (what `bc-ray` starts), with
Ray Train's PlacementGroupCleaner left out (`bc_ray.train.runs.leave_out_a_blind_cleaner`, the
default) and kept (Ray's default), runs alternating on one cluster; each measured run is a bump
of the version before (the first run, version 0, is not measured).

The cleaner asks the State API, which only a dashboard serves, whether the controller lives;
stopping it at the end of a run waited for its timeout.

    python benchmarks/bench_train_overhead.py [--runs 3] [--edges 5000]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from benchmarks.common import print_table, scratch_dir, write_json  # noqa: E402
from bc_ray.cluster import connect  # noqa: E402
from bc_ray.core.train_config import TrainConfig  # noqa: E402
from bc_ray.data.snapshot import build_snapshot  # noqa: E402
from bc_ray.data.synthetic import SyntheticConfig, generate  # noqa: E402
from bc_ray.store.snapshots import publish_snapshot  # noqa: E402
from bc_ray.store.store import Store  # noqa: E402
from bc_ray.train import runs  # noqa: E402
from bc_ray.train.config import TrainJobConfig  # noqa: E402

LEFT_OUT, KEPT = "cleaner left out (bc_ray)", "cleaner kept (Ray's default)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3, help="runs of each setting")
    parser.add_argument("--edges", type=int, default=5000)
    args = parser.parse_args()
    from bc_ray.train.job import run_training

    connect(num_cpus=4, quiet=True)
    uri = f"file://{scratch_dir('bench-train-overhead-')}/store"
    publish_snapshot(Store(uri), build_snapshot(generate(SyntheticConfig(
        num_users=args.edges // 20, num_items=args.edges // 30,
        num_edges=args.edges))).with_cutoff(0.9))
    job = TrainJobConfig(store=uri, train=TrainConfig(epochs=2, eval_every=2, warmup_epochs=0),
                         num_workers=2)
    run_training(job)  # version 0, and the workers' first start: not measured
    leave_out = runs.leave_out_a_blind_cleaner
    seconds: dict[str, list[float]] = {LEFT_OUT: [], KEPT: []}
    for _ in range(args.runs):
        for setting in (KEPT, LEFT_OUT):
            runs.leave_out_a_blind_cleaner = leave_out if setting == LEFT_OUT else \
                (lambda trainer: None)
            started = time.perf_counter()
            run_training(job)
            seconds[setting].append(time.perf_counter() - started)
    runs.leave_out_a_blind_cleaner = leave_out
    base = statistics.median(seconds[KEPT])
    rows = [[name, args.runs, f"{statistics.median(values):.1f}",
             f"{statistics.median(values) / base:.2f}"] for name, values in seconds.items()]
    print_table(f"A bump of {args.edges} edges, 2 epochs, 2 workers: wall seconds (median)",
                ["setting", "runs", "s", "ratio to Ray's default"], rows)
    write_json("train-overhead", {"edges": args.edges, "runs": args.runs, "seconds": seconds})


if __name__ == "__main__":
    main()
