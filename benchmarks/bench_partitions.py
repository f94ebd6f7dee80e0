"""The refresh partitioned by node range against the unpartitioned one, on the same store: time
and peak memory per process kind as the number of ranges P grows, and the largest difference
between their rows (they must agree to 1e-5).

Synthetic marketplaces as in bench_scale.py (~10 users per item, 10 edges per user), 2 layers,
64 dims, an untrained version 0. Each refresh's driver is a fresh process that connects to the
running cluster, as `bc-ray refresh` does, timed from its start to the committed tables. Ray's
workers are sampled every 0.2 s by process title: "peak" is resident memory (it includes the
object-store pages a process maps, which the store holds once per node), "private" is without
them. "must hold" is what the largest range's layer task must hold (its graph with its halo's
node ids, its own rows in and out: it reads the halo's rows in place) and what the largest
range graph task holds while it builds its graph, from the refresh's stats; "planning" is the
partitioned refresh's first stage (degrees, ranges, the range graphs built from the edge
files).

Then the nightly refresh: the snapshot advances by the last 1 % of its timeline (a day's new
edges, new users and items among them), and the incremental refresh over the last P ranges
(from the range caches of the full one before it) runs beside a full one over the same ranges,
and the unpartitioned incremental and full refreshes on a copy of the store whose previous
refresh was unpartitioned; all four tables must agree to 1e-5.

    python benchmarks/bench_partitions.py [--edges 1000000,3000000] [--partitions 1,2,4,8]

With `--store DIR` (a local store whose current version is refreshed, as
`bench_nightly.py --keep-store` leaves it), full refreshes of that store at each P instead,
on a copy of hard links, each compared with the first (no unpartitioned one: at 100M edges it
does not fit), and no nightly pair. "floor" is the private memory of a Ray worker that has only
imported what a refresh task imports: what no partitioning takes away.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")

from benchmarks.bench_scale import (  # noqa: E402
    CUTOFF,
    HIDDEN,
    MB,
    OwnMemory,
    PeakMemory,
    in_fresh_process,
)
from benchmarks.common import print_table, scratch_dir, timed, write_json  # noqa: E402
from tests.helpers import publish_untrained_model  # noqa: E402


def driver(address: str, uri: str, partitions: int, mode: str = "full") -> dict:
    """A refresh's driver (unpartitioned with 0), its own process on the cluster."""
    import ray

    from bc_ray.refresh.config import RefreshConfig
    from bc_ray.refresh.job import run_refresh

    ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False)
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    with OwnMemory() as memory:
        stats = run_refresh(RefreshConfig(store=uri, mode=mode, partitions=partitions)).stats
    return {**stats, "driver_private_peak_mb": memory.peak_anon / MB}


def tables(uri: str) -> dict[str, np.ndarray]:
    from bc_ray.consumer.reader import read_embeddings

    def matrix(entity: str) -> np.ndarray:
        column = read_embeddings(uri, entity).sort("id")["embedding"]  # fixed-size arrays
        return column.to_numpy()  # (rows, dim) at once, not an array per row

    return {e: matrix(e) for e in ("user", "item")}


def worker_floor() -> float:
    """MB of private memory (RssAnon) of a fresh Ray worker once it has imported what a
    refresh task imports (module docstring)."""
    import ray

    @ray.remote(num_cpus=0, max_calls=1)  # a fresh worker, not reused after
    def imported() -> float:
        import bc_ray.refresh.edge_shuffle  # noqa: F401
        import bc_ray.refresh.range_graphs  # noqa: F401
        import bc_ray.refresh.range_stages  # noqa: F401
        from bc_ray.memory import private_bytes

        return private_bytes() / MB

    return float(ray.get(imported.remote()))


def _row(edges: int, nodes: int, count: int, seconds: float, stats: dict, memory: dict,
         base: float, difference: float) -> dict:
    """One refresh as the results record it."""
    ranges = stats.get("partitions", {})
    return {"edges": edges, "nodes": nodes, "partitions": count, "seconds": seconds,
            "job_seconds": stats["seconds"], "ratio": seconds / base,
            "ranges_seconds": stats.get("ranges", {}).get("seconds"),
            **{k: v for k, v in memory.items() if k != "summary"},
            "must_hold_mb": ranges.get("task_must_hold_mb_max"),
            "build_must_hold_mb": ranges.get("build_must_hold_mb_max"),
            "hubs": ranges.get("hubs"), "halo_rows_max": ranges.get("halo_rows_max"),
            "max_abs_difference": difference}


def kept_store(store: str, parts: list[int]) -> list[dict]:
    """Full refreshes of a copy of `store` at each P (module docstring)."""
    import subprocess

    import ray

    from bc_ray.refresh.sizing import GraphSize
    from bc_ray.store.store import Store

    copy = f"{scratch_dir('bench-partitions-store-')}/store"
    subprocess.run(["cp", "-al", store, copy], check=True)  # files are replaced, never edited
    state = Store(f"file://{copy}").state()
    size = GraphSize.of(state, state.version())
    address = ray.get_runtime_context().gcs_address
    rows, expected = [], None
    for count in parts:
        seconds, stats, memory = measured(address, f"file://{copy}", count)
        got = tables(f"file://{copy}")
        expected = expected or got
        difference = max(float(np.abs(got[e] - expected[e]).max()) for e in got)
        del got
        rows.append(_row(size.edges, size.nodes, count, seconds, stats, memory,
                         rows[0]["seconds"] if rows else seconds, difference))
        print(f"  kept store, P={count}: {seconds:.1f}s; {memory['summary']}; private task "
              f"{rows[-1]['task_private_mb']:,.0f} MB; must hold "
              f"{rows[-1]['must_hold_mb']} MB (layer), {rows[-1]['build_must_hold_mb']} MB "
              f"(build); max |diff| {difference:.1e}", flush=True)
    return rows


def measured(address: str, uri: str, count: int, mode: str = "full") -> tuple[float, dict, dict]:
    """(seconds, the refresh's stats, peak memory by process kind) of one refresh."""
    with PeakMemory() as memory:
        seconds, (stats, driver_peak) = timed(
            lambda: in_fresh_process(driver, address, uri, count, mode))
    return seconds, stats, {"driver_peak_mb": driver_peak / MB,
                            "driver_private_mb": stats["driver_private_peak_mb"],
                            "task_peak_mb": memory.peaks.get("task", 0) / MB,
                            "task_private_mb": memory.private.get("task", 0) / MB,
                            "builder_peak_mb": memory.peaks.get("builder", 0) / MB,
                            "summary": memory.summary()}


def nightly(address: str, uri: str, parts: int, edges: int) -> list[dict]:
    """A day later: incremental and full, over `parts` ranges and unpartitioned (module
    docstring). `uri`'s last refresh was full over `parts` ranges."""
    import shutil

    from bc_ray.store.snapshots import advance_snapshot
    from bc_ray.store.store import Store

    root = uri.removeprefix("file://")
    shutil.copytree(root, f"{root}-unpartitioned")
    other = f"{uri}-unpartitioned"
    measured(address, other, 0)  # its caches are the unpartitioned refresh's
    for store in (uri, other):
        advance_snapshot(Store(store), 1.0)
    rows, expected = [], None
    for store, count, mode in ((uri, parts, "incremental"), (uri, parts, "full"),
                               (other, 0, "incremental"), (other, 0, "full")):
        seconds, stats, memory = measured(address, store, count, mode)
        assert stats["mode"] == mode, stats["reason"]
        got = tables(store)
        expected = expected or got
        difference = max(float(np.abs(got[e] - expected[e]).max()) for e in got)
        rows.append({"edges": edges, "partitions": count, "mode": mode, "seconds": seconds,
                     "job_seconds": stats["seconds"],
                     "affected_fraction": stats["affected_fraction"],
                     "reason": stats["reason"], "max_abs_difference": difference,
                     **{k: v for k, v in memory.items() if k != "summary"}})
        print(f"  nightly {edges:,} edges, P={count} {mode}: {seconds:.1f}s, "
              f"affected {stats['affected_fraction']:.2f}; {memory['summary']}; "
              f"max |diff| {difference:.1e}", flush=True)
    return rows


def one_size(edges: int, parts: list[int]) -> tuple[list[dict], list[dict]]:
    import ray

    from bc_ray.core.graph import build_graph
    from bc_ray.data.snapshot import build_snapshot
    from bc_ray.data.synthetic import SyntheticConfig, generate
    from bc_ray.data.timeline import edges_until
    from bc_ray.store.snapshots import publish_snapshot
    from bc_ray.store.store import Store

    uri = f"file://{scratch_dir(f'bench-partitions-{edges}-')}/store"
    snapshot = build_snapshot(generate(SyntheticConfig(
        num_users=edges // 10, num_items=edges // 100, num_edges=edges))).with_cutoff(CUTOFF)
    store = Store(uri)
    publish_snapshot(store, snapshot)
    graph = build_graph(snapshot, edges_until(snapshot, CUTOFF), now=CUTOFF)
    publish_untrained_model(store, graph, HIDDEN, CUTOFF)
    nodes = graph.num_nodes
    del graph, snapshot
    address = ray.get_runtime_context().gcs_address
    rows, expected = [], None
    for count in [0, *parts]:
        seconds, stats, memory = measured(address, uri, count)
        got = tables(uri)
        if expected is None:
            expected, base = got, seconds
        difference = max(float(np.abs(got[e] - expected[e]).max()) for e in got)
        rows.append(_row(edges, nodes, count, seconds, stats, memory, base, difference))
        print(f"  {edges:,} edges, P={count}: {seconds:.1f}s; {memory['summary']}; "
              f"private task {rows[-1]['task_private_mb']:,.0f} MB; "
              f"max |diff| {difference:.1e}", flush=True)
    return rows, nightly(address, uri, parts[-1], edges)  # the last refresh's ranges


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--edges", default="1000000,3000000")
    parser.add_argument("--partitions", default="1,2,4,8")
    parser.add_argument("--store", default=None, metavar="DIR",
                        help="Refresh a copy of this store at each P instead (module docstring).")
    parser.add_argument("--object-store-gb", type=float, default=None,
                        help="The local cluster's object store (default: Ray's, 30%% of the "
                             "memory); what does not fit is spilled to disk.")
    args = parser.parse_args()
    import ray

    store_bytes = int(args.object_store_gb * 2**30) if args.object_store_gb else None
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False,
             object_store_memory=store_bytes, log_to_driver=False,
             logging_level=logging.WARNING)
    floor = worker_floor()
    print(f"a Ray worker with a refresh task's imports: {floor:,.0f} MB private", flush=True)
    results: list[dict] = []
    nights: list[dict] = []
    started = time.perf_counter()
    parts = [int(p) for p in args.partitions.split(",")]
    for edges in ([] if args.store else (int(e) for e in args.edges.split(","))):
        full, night = one_size(edges, parts)
        results += full
        nights += night
        write_json("partitions", {"cpus": os.cpu_count(), "worker_floor_mb": floor,
                                  "results": results, "nightly": nights})
    if args.store:
        results = kept_store(args.store, parts)
        write_json("partitions-store", {"cpus": os.cpu_count(), "worker_floor_mb": floor,
                                        "store": args.store, "object_store_gb":
                                        args.object_store_gb, "results": results})
    ray.shutdown()
    print_results(results, nights, floor, bool(args.store), time.perf_counter() - started)


def _mb(value) -> str:
    return "-" if value in (None, 0) else f"{value:,.0f}"


def print_results(results: list[dict], nights: list[dict], floor: float, kept: bool,
                  seconds: float) -> None:
    """The tables: every full refresh, then (not for a kept store) the nightly pairs."""
    title = "a kept store" if kept else "P = 0: unpartitioned"
    print_table(f"Full refresh by node ranges ({title}; {os.cpu_count()} CPUs; MB; a worker's "
                f"floor {floor:,.0f} MB; {seconds:.0f}s in all)",
                ["edges", "P", "s", f"vs {'the first P' if kept else 'P=0'}", "planning s",
                 "driver peak", "driver private", "task peak", "task private",
                 "task private - floor", "builder peak", "layer task must hold",
                 "build task must hold", "hubs", "max |diff|"],
                [[r["edges"], r["partitions"], r["seconds"], r["ratio"],
                  "-" if r["ranges_seconds"] is None else r["ranges_seconds"],
                  _mb(r["driver_peak_mb"]), _mb(r["driver_private_mb"]),
                  _mb(r["task_peak_mb"]), _mb(r["task_private_mb"]),
                  _mb(r["task_private_mb"] and r["task_private_mb"] - floor),
                  _mb(r["builder_peak_mb"]), _mb(r["must_hold_mb"]),
                  _mb(r.get("build_must_hold_mb")), r["hubs"] or "-",
                  f"{r['max_abs_difference']:.1e}"] for r in results])
    if kept:
        return
    print_table("A day later (the last 1 % of the timeline): incremental and full, by ranges "
                "and unpartitioned (MB)",
                ["edges", "P", "mode", "s", "vs full, same P", "affected", "driver private",
                 "task private", "builder peak", "max |diff|"],
                [[r["edges"], r["partitions"], r["mode"], r["seconds"],
                  r["seconds"] / next(f["seconds"] for f in nights
                                      if f["edges"] == r["edges"] and f["mode"] == "full"
                                      and f["partitions"] == r["partitions"]),
                  r["affected_fraction"], _mb(r["driver_private_mb"]),
                  _mb(r["task_private_mb"]), _mb(r["builder_peak_mb"]),
                  f"{r['max_abs_difference']:.1e}"] for r in nights])

if __name__ == "__main__":
    main()
