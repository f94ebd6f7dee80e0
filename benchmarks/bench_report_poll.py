"""A bump's wall time with Ray Train's default report poll (2 s) against bc_ray's (0.25 s).

Ray Train's controller takes a worker's per-epoch report when it polls the worker group, and the
worker's next report waits for that poll (`bc_ray.train.runs.REPORT_POLL_ENV`). Each size trains
the same version 0 on 2 workers with each setting, runs interleaved, each into a store of its own
(the same snapshot): the wall time of the whole `run_training` call, the epochs' own compute
time and the workers' edges/s (whether polling more often takes CPU from them), and Recall@50
(the same model either way).

    python benchmarks/bench_report_poll.py [--edges 10000,200000] [--epochs 15] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from benchmarks.common import print_table, scratch_dir, write_json  # noqa: E402
from bc_ray.core.train_config import TrainConfig  # noqa: E402
from bc_ray.data.snapshot import build_snapshot  # noqa: E402
from bc_ray.data.synthetic import SyntheticConfig, generate  # noqa: E402
from bc_ray.models.graphsage.spec import VersionSpec  # noqa: E402
from bc_ray.store.snapshots import publish_snapshot  # noqa: E402
from bc_ray.store.store import Store  # noqa: E402
from bc_ray.train.config import GateConfig, TrainJobConfig  # noqa: E402
from bc_ray.train.runs import REPORT_POLL_ENV, REPORT_POLL_S  # noqa: E402

RAY_DEFAULT_POLL_S = "2.0"  # ray.train.v2's DEFAULT_HEALTH_CHECK_INTERVAL_S
SETTINGS = {f"Ray's default ({RAY_DEFAULT_POLL_S} s)": RAY_DEFAULT_POLL_S,
            f"bc_ray's ({REPORT_POLL_S} s)": None}  # None: as `run_training` sets it


def one_bump(snapshot, train: TrainConfig, poll: str | None) -> dict:
    """Version 0 trained into a store of its own, Ray Train's poll at `poll` seconds (None:
    left to `run_training`, which sets bc_ray's)."""
    from bc_ray.train.job import run_training

    uri = f"file://{scratch_dir('bench-poll-')}/store"
    publish_snapshot(Store(uri), snapshot)
    before = os.environ.pop(REPORT_POLL_ENV, None)
    if poll is not None:
        os.environ[REPORT_POLL_ENV] = poll
    try:
        outcome = run_training(TrainJobConfig(
            store=uri, spec=VersionSpec(hidden_dim=64), train=train, num_workers=2,
            gate=GateConfig(min_recall=0.0)))
    finally:  # the caller's environment as it was
        os.environ.pop(REPORT_POLL_ENV, None)
        if before is not None:
            os.environ[REPORT_POLL_ENV] = before
    metrics = outcome.metrics
    return {"wall_s": metrics["wall_seconds"], "train_s": metrics["train_seconds"],
            "edges_per_s": metrics["edges_per_second"], "recall": metrics["recall_at_50"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--edges", default="10000,200000",
                        help="comma-separated snapshot sizes (10,000: the demo's at --scale 0.2)")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import ray

    ray.init(address="local", num_cpus=4, include_dashboard=False, log_to_driver=False)
    rows, results = [], {"epochs": args.epochs, "repeats": args.repeats, "sizes": {}}
    for edges in (int(e) for e in args.edges.split(",")):
        snapshot = build_snapshot(generate(SyntheticConfig(
            num_users=edges // 35, num_items=edges // 46, num_edges=edges))).with_cutoff(0.9)
        train = TrainConfig(epochs=args.epochs, batch_size=1024, eval_every=5)
        runs: dict[str, list[dict]] = {name: [] for name in SETTINGS}
        for _ in range(args.repeats):  # interleaved: the machine's drift hits both alike
            for name, poll in SETTINGS.items():
                runs[name].append(one_bump(snapshot, train, poll))
                print(f"{edges:,} edges, {name}: {runs[name][-1]['wall_s']:.1f} s", flush=True)
        baseline = statistics.median(r["wall_s"] for r in runs[next(iter(SETTINGS))])
        for name, measured in runs.items():
            wall = statistics.median(r["wall_s"] for r in measured)
            rows.append([f"{edges:,}", name, wall, wall / baseline,
                         statistics.median(r["train_s"] for r in measured),
                         statistics.median(r["edges_per_s"] for r in measured),
                         " ".join(f"{r['recall']:.4f}" for r in measured)])
        results["sizes"][str(edges)] = runs
    print_table(f"A 2-worker bump of {args.epochs} epochs, Ray Train's report poll (median of "
                f"{args.repeats}, interleaved)",
                ["edges", "poll", "wall s", "vs Ray's default", "epochs' compute s",
                 "edges/s", "Recall@50 per run"], rows)
    write_json("report_poll", results)


if __name__ == "__main__":
    main()
