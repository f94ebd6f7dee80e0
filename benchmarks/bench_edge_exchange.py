"""A sharded run's workers reading their CSR rows from a store of daily edge files: each file
read by one worker and the ends exchanged (`bc_ray/train/edge_exchange.py`), beside every worker
reading every file and keeping its own ends (the way before), in the same run, on the same
store and row owners.

The workers are W processes in one gloo group on this machine (what Ray Train gives the
sharded bump's workers, without Ray's start-up); each mode runs `--repeats` times, the modes
interleaved. Per mode: the slowest worker's seconds (the bump waits for it), each worker's
private memory (RssAnon) at its peak above what it held before reading, and what it must hold
(its rows: 8 bytes an end and a row pointer). The rows are checked equal between the modes.

    python benchmarks/bench_edge_exchange.py [--days 10] [--daily 1000000] [--workers 2]
                                             [--repeats 2] [--s3 | --keep-store DIR | --store DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from benchmarks.bench_nightly import ingest_day  # noqa: E402
from benchmarks.bench_scale import MB, OwnMemory  # noqa: E402
from benchmarks.common import print_table, scratch_dir, write_json  # noqa: E402

MODES = ("every worker reads every file (before)", "each file read once, ends exchanged")


def build_store(root: str, days: int, daily: int, s3: bool = False) -> str:
    """The store, local or on S3 (moto's server on 127.0.0.1, started here: every worker reads
    the files over HTTP, as workers on a cluster read object storage)."""
    uri, landing = f"file://{root}/store", os.path.join(root, "landing")
    if s3:
        from benchmarks.bench_two_nodes import start_s3

        _, uri = start_s3()  # a thread of this process, for as long as it runs
    os.makedirs(landing, exist_ok=True)
    for day in range(days):
        ingest_day(uri, landing, day, daily)
    return uri


def plan(uri: str, workers: int, bytes_per_row: int = 0):
    """The store's edge files and row owners, as `plan_owners` makes them (degrees counted by
    one Ray task per file; `bytes_per_row`: `row_bytes`)."""
    import ray

    from bc_ray.partition.edge_files import EdgeFiles, count_degrees
    from bc_ray.store.snapshots import load_entities
    from bc_ray.store.store import Store
    from bc_ray.train.sharded import plan_owners

    store = Store(uri)
    entities = load_entities(store, store.state())
    files = EdgeFiles.of(store, store.state(), entities.num_users, entities.num_items)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        owners = plan_owners(files, workers, bytes_per_row,
                             degrees=count_degrees(files, 1.0, None))
    finally:
        ray.shutdown()
    return files, owners


def _read_alone(files, owners, rank: int):
    """The way before: this worker reads every file and keeps its own ends."""
    from bc_ray.core.node_rows import drained
    from bc_ray.memory import return_freed_memory
    from bc_ray.models.graphsage.sharded_task import LocalRows
    from bc_ray.train.sharded import own_keys

    keys = own_keys(files, owners, rank)
    return LocalRows.from_keys(owners, rank, drained(keys, return_freed_memory))


def worker(rank: int, port: int, world: int, files, owners, repeats: int, results) -> None:
    import hashlib

    import torch.distributed as dist

    from bc_ray.memory import private_bytes, return_freed_memory
    from bc_ray.train.sharded import read_local_rows

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    try:
        for repeat in range(repeats):
            for mode in MODES:
                dist.barrier()
                return_freed_memory()
                before = private_bytes()
                with OwnMemory() as memory:
                    started = time.perf_counter()
                    rows = (_read_alone(files, owners, rank) if mode == MODES[0]
                            else read_local_rows(files, owners, rank))
                    seconds = time.perf_counter() - started
                digest = hashlib.sha256(rows.crow.tobytes() + rows.neighbours.tobytes())
                results[(repeat, mode, rank)] = {
                    "seconds": seconds, "ends": int(rows.neighbours.size),
                    "must_hold_mb": (rows.crow.nbytes + rows.neighbours.nbytes) / MB,
                    "peak_above_start_mb": (memory.peak_anon - before) / MB,
                    "rows_sha256": digest.hexdigest()}
                del rows
    finally:
        dist.destroy_process_group()


def add_store_options(parser: argparse.ArgumentParser, s3: bool = False) -> None:
    """The options of a benchmark whose W gloo workers read a store of daily edge files:
    how many days, workers and repeats, and where the store is (built, kept or reused)."""
    parser.add_argument("--days", type=int, default=10)
    parser.add_argument("--daily", type=int, default=1_000_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    where = parser.add_mutually_exclusive_group()
    if s3:
        where.add_argument("--s3", action="store_true",
                           help="the store on S3 (moto's server on 127.0.0.1; not kept)")
    where.add_argument("--keep-store", default=None, metavar="DIR")
    where.add_argument("--store", default=None, metavar="DIR",
                       help="a local store a run with --keep-store built")


def store_uri(args: argparse.Namespace, scratch_prefix: str) -> str:
    """The store `add_store_options` asked for: reused, or built (and kept) here."""
    if args.store:
        return f"file://{args.store}/store"
    root = args.keep_store or scratch_dir(scratch_prefix)
    return build_store(root, args.days, args.daily, getattr(args, "s3", False))


def spawn_workers(worker, workers: int, *args) -> dict:
    """`worker(rank, port, workers, *args, results)` in `workers` spawned processes; what they
    put in `results`."""
    import torch.multiprocessing as mp

    from tests.conftest import free_port

    results = mp.get_context("spawn").Manager().dict()
    mp.spawn(worker, args=(free_port(), workers, *args, results), nprocs=workers, join=True)
    return dict(results)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_store_options(parser, s3=True)
    parser.add_argument("--name", default="edge-exchange")
    args = parser.parse_args()

    uri = store_uri(args, "bc-ray-edge-exchange-")
    files, owners = plan(uri, args.workers)
    results = spawn_workers(worker, args.workers, files, owners, args.repeats)

    rows, runs = [], []
    for repeat in range(args.repeats):
        for mode in MODES:
            per_rank = [results[(repeat, mode, rank)] for rank in range(args.workers)]
            runs.append({"repeat": repeat, "mode": mode, "workers": per_rank})
            rows.append([mode, repeat, round(max(r["seconds"] for r in per_rank), 1),
                         " / ".join(f"{r['ends']:,}" for r in per_rank),
                         " / ".join(f"{r['must_hold_mb']:,.0f}" for r in per_rank),
                         " / ".join(f"{r['peak_above_start_mb']:,.0f}" for r in per_rank)])
    for rank in range(args.workers):
        digests = {results[(rep, mode, rank)]["rows_sha256"]
                   for rep in range(args.repeats) for mode in MODES}
        if len(digests) != 1:
            raise RuntimeError(f"worker {rank}'s rows differ between the modes")
    where = "S3 (moto)" if args.s3 else "a local store"
    print_table(f"Reading a sharded run's rows: {len(files.files)} edge files on {where}, "
                f"{args.workers} workers", ["mode", "repeat", "s (slowest worker)",
                                            "edge ends per worker", "must hold MB",
                                            "private peak above start MB"], rows)
    path = write_json(args.name, {"files": len(files.files), "workers": args.workers,
                                  "s3": args.s3, "runs": runs})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
