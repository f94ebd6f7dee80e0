"""The sharded bump's layer-wise pass (`sharded_layerwise`: every node's embedding, computed by
the W workers that hold its rows), the stage that takes most of a 100M bump's time (its last
evaluation and the gate's pass over M_{k-1}).

The workers are W processes in one gloo group on this machine (what Ray Train gives the sharded
bump's workers, without Ray's start-up), each holding its CSR rows (read from the store's daily
edge files as the bump reads them, its owners planned as a bump aligned to its parent plans
them) and ID rows made from each node's id alone, so that runs whose owners split the nodes
otherwise compute the same rows; the model is GraphSAGE as the nightly path trains it (2
layers, hidden 64). Per repeat: the slowest worker's seconds for the pass (the
bump waits for it), each worker's private memory (RssAnon) at its peak above what it held
before, and a digest of each worker's embeddings.

The code measured is the code this script imports. To compare with another commit, run the
same script from a worktree of it on the same store (`--store`), the runs interleaved, each
with the same `--rows DIR`: the first run keeps its workers' embeddings there (by entity and
index), later runs report their largest difference from them (float rounding, where sums are
taken in another order, gives a different digest).

    python benchmarks/bench_sharded_eval.py [--days 10] [--daily 1000000] [--workers 2]
                                            [--repeats 2] [--label now] [--rows DIR]
                                            [--keep-store DIR | --store DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from benchmarks.bench_edge_exchange import (  # noqa: E402
    add_store_options,
    plan,
    spawn_workers,
    store_uri,
)
from benchmarks.bench_scale import HIDDEN, MB, OwnMemory  # noqa: E402
from benchmarks.common import print_table, write_json  # noqa: E402
from bc_ray.models.graphsage.spec import VersionSpec  # noqa: E402
from bc_ray.train.sharded import row_bytes  # noqa: E402

NOW = 0.0  # the time the inputs' ages are taken at: the pass's cost does not depend on it


def compared(z, owners, rank: int, rows_dir: str | None) -> float | None:
    """The largest difference of this worker's rows `z` from those an earlier run kept in
    `rows_dir`, by entity and index (so runs whose owners split the nodes otherwise compare),
    which keeps them there if none did (None then, and without `rows_dir`)."""
    import numpy as np
    import torch.distributed as dist

    if rows_dir is None:
        return None
    paths = {entity: os.path.join(rows_dir, f"{entity}.npy") for entity in ("user", "item")}
    fresh = not os.path.exists(paths["item"])  # every worker looks before any writes
    dist.barrier()
    if fresh and rank == 0:
        for entity, count in (("user", owners.num_users), ("item", owners.num_items)):
            np.lib.format.open_memmap(paths[entity], mode="w+", dtype=np.float32,
                                      shape=(count, z.shape[1]))
    dist.barrier()
    largest = 0.0
    for entity, first, last, offset in owners.spans(rank):
        kept = np.load(paths[entity], mmap_mode="r+" if fresh else "r")
        mine = z[offset:offset + last - first].numpy()
        if fresh:
            kept[first:last] = mine
            kept.flush()
        else:
            largest = max(largest, float(np.abs(kept[first:last] - mine).max(initial=0.0)))
    return None if fresh else largest


def id_rows_of(owners, rank: int, chunk: int = 1 << 20):
    """ID rows of the scale fresh ones have, each a function of its node's id alone."""
    import torch

    nodes = owners.nodes_of(rank)
    rows = torch.empty(nodes.numel(), HIDDEN)
    phase = torch.arange(HIDDEN, dtype=torch.float64) * 1.3
    for first in range(0, nodes.numel(), chunk):
        part = nodes[first:first + chunk].double()[:, None] * 0.7548776662 + phase
        rows[first:first + chunk] = (torch.sin(part) * 0.1).float()
    return rows


def worker(rank: int, port: int, world: int, files, owners, repeats: int, rows_dir: str | None,
           results) -> None:
    import hashlib

    import torch
    import torch.distributed as dist

    from bc_ray.core.train_config import TrainConfig
    from bc_ray.memory import private_bytes, return_freed_memory
    from bc_ray.models.graphsage.sharded_eval import sharded_layerwise
    from bc_ray.train.sharded import ShardedRun, sharded_trainer

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=world)
    torch.set_num_threads(1)  # one core a worker, as Ray Train's workers get here
    try:
        train = TrainConfig(mode="sampled", fanout=10, sparse_ids_min_nodes=0,
                            id_optimizer="rowwise_adagrad")
        run = ShardedRun(files, owners, VersionSpec(num_layers=2, hidden_dim=HIDDEN), train, NOW)
        torch.manual_seed(0)  # the same dense weights in every run, so digests compare
        trainer = sharded_trainer(run, rank, world, id_rows=id_rows_of(owners, rank))
        for repeat in range(repeats):
            dist.barrier()
            return_freed_memory()
            before = private_bytes()
            with OwnMemory() as memory:
                started = time.perf_counter()
                z = sharded_layerwise(trainer.task, trainer.model)
                seconds = time.perf_counter() - started
            results[(repeat, rank)] = {
                "seconds": seconds, "ends": int(trainer.task.rows.neighbours.size),
                "rows": int(z.shape[0]), "peak_above_start_mb": (memory.peak_anon - before) / MB,
                "z_sha256": hashlib.sha256(z.numpy().tobytes()).hexdigest(),
                "max_abs_diff_vs_kept": compared(z, owners, rank, rows_dir)}
            del z
    finally:
        dist.destroy_process_group()


def _largest(differences) -> str:
    known = [d for d in differences if d is not None]
    return f"{max(known):.1e}" if known else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_store_options(parser)
    parser.add_argument("--label", default="now", help="names this code's rows (and the JSON)")
    parser.add_argument("--rows", default=None, metavar="DIR",
                        help="keep the embeddings here, or compare with those kept")
    args = parser.parse_args()

    files, owners = plan(store_uri(args, "bc-ray-sharded-eval-"), args.workers,
                         row_bytes(VersionSpec(num_layers=2, hidden_dim=HIDDEN), HIDDEN,
                                   "rowwise_adagrad"))
    if args.rows:
        os.makedirs(args.rows, exist_ok=True)
    results = spawn_workers(worker, args.workers, files, owners, args.repeats, args.rows)
    runs = [[results[(repeat, rank)] for rank in range(args.workers)]
            for repeat in range(args.repeats)]
    rows = [[args.label, repeat, round(max(r["seconds"] for r in ranks), 1),
             " / ".join(f"{r['ends']:,}" for r in ranks),
             f"{sum(r['ends'] for r in ranks) / max(r['seconds'] for r in ranks):,.0f}",
             " / ".join(f"{r['peak_above_start_mb']:,.0f}" for r in ranks),
             " / ".join(r["z_sha256"][:12] for r in ranks),
             _largest(r["max_abs_diff_vs_kept"] for r in ranks)]
            for repeat, ranks in enumerate(runs)]
    print_table(f"The sharded layer-wise pass over every node: {len(files.files)} edge files, "
                f"{args.workers} workers, {os.cpu_count()} cores",
                ["code", "repeat", "s (slowest worker)", "edge ends per worker", "ends/s",
                 "private peak above start MB", "z digest per worker",
                 "max |diff| vs kept rows"], rows)
    path = write_json(f"sharded-eval-{args.label}", {
        "files": len(files.files), "workers": args.workers, "label": args.label, "runs": runs})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
