"""Entities' first interactions on an ingested store, found by Ray tasks over the edge files
(`bc_ray/partition/first_seen.py`: what a partitioned refresh and a sharded bump of an age-aware
model use), beside one process reading the whole edge list (`load_ingested`, what the
partitioned refresh's driver did for such a model), on the same store in the same run.

The whole read runs in a fresh process (its peak RSS: VmHWM); the tasks on a local Ray cluster
of `--cpus` CPUs, with every process's peak resident and private memory sampled by kind (the
driver; each task by its function). Degrees are counted first, as both callers do anyway, and
timed apart. The two results are checked equal, entity by entity.

    python benchmarks/bench_first_seen.py --store DIR [--ranges 2] [--cpus 2] [--no-whole]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import numpy as np  # noqa: E402

from benchmarks.bench_scale import MB, PeakMemory, in_fresh_process, runtime_floor  # noqa: E402
from benchmarks.common import print_table, write_json  # noqa: E402

TASKS = ("_degrees_task", "_send_task", "_firsts_task", "_count_task")


class PeaksByTask(PeakMemory):
    """Peak resident and private (resident less shared: the object store's pages) memory of the
    driver and of each task function's processes."""

    interval = 0.1

    def kind(self, title: str) -> str | None:
        return next((task for task in TASKS if task in title), None)


def whole_edge_list(uri: str, out: str) -> float:
    """Seconds to read the snapshot whole and take its entities' first interactions (in a
    fresh process: the caller reads its peak); the columns go to `out` to compare."""
    started = time.perf_counter()
    from bc_ray.store.snapshots import load_snapshot
    from bc_ray.store.store import Store

    snapshot = load_snapshot(Store(uri))
    seconds = time.perf_counter() - started
    np.savez(out, **{f"{e}_{c}": snapshot.entities(e)[c].to_numpy()
                     for e in ("user", "item") for c in ("first_t", "first_ts")})
    return seconds


def by_tasks(uri: str, ranges: int, cpus: int) -> tuple[dict, object]:
    import ray

    from bc_ray.partition.edge_files import EdgeFiles, count_degrees_by_file
    from bc_ray.partition.first_seen import first_interactions
    from bc_ray.partition.task_memory import slot_memory
    from bc_ray.store.snapshots import load_entities
    from bc_ray.store.store import Store

    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    store = Store(uri)
    state = store.state()
    entities = load_entities(store, state)
    files = EdgeFiles.of(store, state, entities.num_users, entities.num_items)
    budget = slot_memory(1.0, ray.nodes())  # a task's share of the node, as the refresh plans
    with PeaksByTask() as peaks:
        started = time.perf_counter()
        degrees, file_edges = count_degrees_by_file(files, 1.0, None)
        counted = time.perf_counter()
        found = first_interactions(files, degrees, file_edges, budget=budget, ranges=ranges)
        done = time.perf_counter()
    ray.shutdown()
    return {"degrees_s": counted - started, "task_budget_mb": budget / MB,
            "first_interactions_s": done - counted,
            "edges": int(sum(file_edges)), "files": len(file_edges), "nodes": int(degrees.size),
            "rss_mb": {k: v / MB for k, v in peaks.peaks.items()},
            "private_mb": {k: v / MB for k, v in peaks.private.items()}}, found


def same(found, path: str) -> bool:
    whole = np.load(path)
    for entity in ("user", "item"):
        has = getattr(found, f"{entity}_has")
        t, ts = whole[f"{entity}_first_t"], whole[f"{entity}_first_ts"]
        if not (np.array_equal(np.isnan(t), ~has)
                and np.array_equal(t[has], getattr(found, f"{entity}_t")[has])
                and np.array_equal(ts[has], getattr(found, f"{entity}_ts")[has])):
            return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", required=True, help="an ingested store's folder")
    parser.add_argument("--ranges", type=int, default=2)
    parser.add_argument("--cpus", type=int, default=2)
    parser.add_argument("--no-whole", action="store_true",
                        help="skip the whole read (where the edge list does not fit)")
    parser.add_argument("--name", default="first-seen")
    args = parser.parse_args()
    uri = f"file://{os.path.abspath(args.store)}"
    floor = runtime_floor() / MB
    tasks, found = by_tasks(uri, args.ranges, args.cpus)
    result = {"store": args.store, "ranges": args.ranges, "cpus": args.cpus,
              "imports_floor_mb": floor, "tasks": tasks}
    rows = [["tasks: degrees (both callers count them anyway)", tasks["degrees_s"], "", ""]]
    for kind in ("driver", *TASKS[1:]):
        rows.append([f"tasks: {kind}", "", tasks["rss_mb"].get(kind, 0.0),
                     tasks["private_mb"].get(kind, 0.0)])
    rows.append(["tasks: first interactions", tasks["first_interactions_s"], "", ""])
    if not args.no_whole:
        out = os.path.join(os.path.dirname(os.path.abspath(args.store)), "first-seen-whole.npz")
        seconds, peak = in_fresh_process(whole_edge_list, uri, out)
        result["whole"] = {"seconds": seconds, "peak_rss_mb": peak / MB, "equal": same(found, out)}
        os.remove(out)
        rows.append(["one process reads the edge list", seconds, peak / MB, ""])
        result["ratios"] = {
            "time": tasks["first_interactions_s"] / seconds,
            "largest_process": max(tasks["rss_mb"].values()) / (peak / MB)}
    print_table(f"First interactions, {tasks['edges']:,} edges in {tasks['files']} files, "
                f"{tasks['nodes']:,} nodes ({args.ranges} user ranges; imports alone "
                f"{floor:,.0f} MB)", ["what", "seconds", "peak RSS MB", "private MB"], rows)
    if "whole" in result:
        print(f"equal: {result['whole']['equal']}; time ratio {result['ratios']['time']:.2f}x, "
              f"largest process {result['ratios']['largest_process']:.2f}x")
    print(write_json(args.name, result))


if __name__ == "__main__":
    main()
