"""A sharded bump's alignment targets: the stored ver-(k-1) tables against M_{k-1} run by the
workers on the training graph, on the same store and seeds, side by side.

The store is built as the nightly path builds it (`bench_nightly`: D daily batches ingested,
version 0 trained sharded with a step budget, then refreshed over the whole graph, held-out
day included, as the nightly refresh after each ingest leaves it). Each seed then bumps to
version 1 twice from that same state, once per target source, in alternating order: the gate
is set to reject every candidate (`--min-recall-vs-parent` far above 1), so the current
version stays 0 and each run is scored on the same held-out day with the same draw of users.

Per run: the gate's scores (Recall@50 of the candidate and of M_0 on the held-out day, the
relative alignment error against the run's own targets), whether the targets saw the held-out
day, the command's seconds and the train workers' peak resident memory. The summary is the
paired difference, stored minus model, in Recall@50 (the look-ahead the stored tables carry
into M_k, which the relative gate reads as progress) and the ratios of time and memory.

    python benchmarks/bench_sharded_targets.py [--days 6] [--daily 200000] [--seeds 3]
                                               [--workers 2] [--max-steps 200]
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")

from bc_ray.experiments.seeds import t_interval  # noqa: E402
from benchmarks.bench_nightly import ingest_day, run_cli  # noqa: E402
from benchmarks.bench_scale import MB, PeakMemory  # noqa: E402
from benchmarks.common import print_table, scratch_dir, write_json  # noqa: E402

SOURCES = ("stored", "model")
NEVER_PASSES = "1000000"  # --min-recall-vs-parent: every candidate is rejected, version 0 stays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=6)
    parser.add_argument("--daily", type=int, default=200_000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-steps", type=int, default=200)
    parser.add_argument("--batch-size", type=int, default=4096,
                        help="Examples per optimiser step over all workers.")
    args = parser.parse_args()
    import ray

    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False,
             log_to_driver=False, logging_level=logging.WARNING)
    address = ray.get_runtime_context().gcs_address
    work = scratch_dir("bench-sharded-targets-")
    uri, landing = f"file://{work}/store", f"{work}/landing"
    os.makedirs(landing)
    for day in range(args.days):
        ingest_day(uri, landing, day, args.daily)
    train = ["train", "--store", uri, "--address", address, "--sharded",
             "--num-workers", str(args.workers), "--max-steps", str(args.max_steps),
             "--batch-size", str(args.batch_size // args.workers), "--holdout-days", "1",
             "--max-align-error-rel", "5"]
    _, _, first = run_cli(*train, "--min-recall-vs-parent", "0")
    assert first["status"] == "published", first
    run_cli("refresh", "--store", uri, "--address", address, "--full", "--partitions", "2")

    runs: list[dict] = []
    for seed in range(args.seeds):
        for source in SOURCES if seed % 2 == 0 else SOURCES[::-1]:
            with PeakMemory() as memory:
                seconds, _, out = run_cli(*train, "--seed", str(seed), "--targets", source,
                                          "--warm-start", "mean",
                                          "--min-recall-vs-parent", NEVER_PASSES,
                                          "--no-fail-on-reject")
            assert out["status"] == "rejected", out  # version 0 stays for the next run
            runs.append({"seed": seed, "targets": source, "seconds": seconds,
                         "worker_peak_mb": memory.peaks.get("train worker", 0) / MB,
                         **{name: out.get(name) for name in (
                             "recall_at_50", "parent_recall_at_50", "align_error_rel",
                             "targets_see_held_out", "train_seconds")}})
            print(f"  seed {seed} {source}: {seconds:.0f}s, recall "
                  f"{out['recall_at_50']:.4f}", flush=True)
    _report(args, runs)


def _report(args: argparse.Namespace, runs: list[dict]) -> None:
    print_table(f"Sharded bump to version 1, {args.days} days x {args.daily:,} interactions, "
                f"W={args.workers}, {args.max_steps} steps",
                ["seed", "targets", "saw held-out day", "Recall@50", "M_0's", "vs M_0",
                 "align err rel", "seconds", "worker peak MB"],
                [[r["seed"], r["targets"], r["targets_see_held_out"],
                  f"{r['recall_at_50']:.4f}", f"{r['parent_recall_at_50']:.4f}",
                  f"{r['recall_at_50'] / r['parent_recall_at_50']:.3f}",
                  f"{r['align_error_rel']:.3f}", f"{r['seconds']:.0f}",
                  f"{r['worker_peak_mb']:,.0f}"] for r in runs])
    pairs = {(r["seed"], r["targets"]): r for r in runs}
    seeds = sorted({r["seed"] for r in runs})

    def paired(name: str, ratio: bool = False) -> tuple[float, float, float]:
        values = [pairs[s, "stored"][name] / max(pairs[s, "model"][name], 1e-9) if ratio
                  else pairs[s, "stored"][name] - pairs[s, "model"][name] for s in seeds]
        return t_interval(np.asarray(values, dtype=float))

    summary = {"recall_stored_minus_model": paired("recall_at_50"),
               "seconds_stored_over_model": paired("seconds", ratio=True),
               "worker_peak_stored_over_model": paired("worker_peak_mb", ratio=True)}
    print_table("Stored minus model (paired by seed; mean [95% interval])",
                ["quantity", "mean", "low", "high"],
                [[name, *(f"{v:.4f}" for v in values)] for name, values in summary.items()])
    write_json("sharded-targets", {"args": vars(args), "runs": runs, "summary": summary})


if __name__ == "__main__":
    main()
