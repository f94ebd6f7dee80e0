"""Why a sharded training worker holds more than its state during the steps: glibc's malloc
arenas, measured, with the allocator settings that could give the pages back, beside the
default in the same run.

Ray Train runs the training function in a thread of its worker process, and glibc gives a
thread other than the main one its own arena, whose pages a step frees stay resident. Here two
plain processes (gloo, no Ray) run the sharded BC-Aligner steps of `bc-ray train --sharded`
(`sharded_trainer`, row-wise Adagrad, alignment to random targets, DDP on the dense weights)
over a synthetic snapshot, rank 0 measured, in these variants:

- main thread: the steps in the process's main thread (main arena);
- worker thread: in a second thread, as Ray Train runs them (the baseline);
- arena max 1: a worker thread, the process started with MALLOC_ARENA_MAX=1 (one arena);
- mmap >= 4 MB: a worker thread, every allocation of 4 MB or more mapped and unmapped
  (mallopt M_MMAP_THRESHOLD);
- trim every step: a worker thread, `malloc_trim(0)` after each step.

Per variant: rank 0's private memory (RssAnon) once set up, its peak during the steps (sampled
every 5 ms), the difference, that difference per node of one step's sampled neighbourhood, and
seconds per step after the first 10, with its ratio to the worker-thread baseline.

    python benchmarks/bench_worker_arenas.py [--edges 3000000] [--steps 100]
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.queues import Queue

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

from bc_ray.train.sharded import ShardedRun  # noqa: E402
from benchmarks.bench_scale import CUTOFF, HIDDEN, MB  # noqa: E402
from benchmarks.bench_sharded_train import synthetic_store  # noqa: E402
from benchmarks.common import print_table, scratch_dir, write_json  # noqa: E402

PREVIOUS_DIM = 64
WARMUP_STEPS = 10
RANK_TIMEOUT_S = 3600
M_MMAP_THRESHOLD = -3  # mallopt's parameter number (malloc.h)
VARIANTS = {  # name: (run in a thread, environment, allocator setting)
    "main thread": (False, {}, None),
    "worker thread": (True, {}, None),
    "arena max 1": (True, {"MALLOC_ARENA_MAX": "1"}, None),
    "mmap >= 4 MB": (True, {}, "mmap"),
    "trim every step": (True, {}, "trim"),
}


def _steps(trainer, steps: int, trim: Callable[[int], int] | None, result: dict) -> None:
    batches = iter(trainer.task.epoch(1))
    started = None
    for done in range(1, steps + 1):
        trainer.step(next(batches))
        if trim is not None:
            trim(0)
        if done == WARMUP_STEPS:
            started = time.perf_counter()
    result["s_per_step"] = (time.perf_counter() - started) / (steps - WARMUP_STEPS)


def rank_main(rank: int, run: ShardedRun, variant: str, steps: int, port: int,
              out: Queue) -> None:
    """One of the two ranks: set up as a sharded worker, then run `steps` steps."""
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from bc_ray.core.row_shards import ShardedRows
    from bc_ray.core.trainer import ShardedAlignment
    from bc_ray.core.transforms import make_transform
    from bc_ray.memory import private_bytes
    from bc_ray.train.sharded import sharded_trainer

    threaded, _, setting = VARIANTS[variant]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.set_num_threads(1)
    libc = ctypes.CDLL("libc.so.6")
    if setting == "mmap":
        libc.mallopt(M_MMAP_THRESHOLD, 4 * 2**20)
    nodes = run.owners.num_users + run.owners.num_items
    targets = ShardedRows(run.owners, torch.randn(run.owners.num_rows(rank), PREVIOUS_DIM))
    alignment = ShardedAlignment(make_transform("linear", run.spec.output_dim, PREVIOUS_DIM),
                                 targets, torch.ones(nodes, dtype=torch.bool))
    trainer = sharded_trainer(run, rank, 2, alignment)
    trainer.module = DistributedDataParallel(trainer.joint)
    setup = private_bytes()
    peak, stop, result = [setup], threading.Event(), {}

    def watch() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], private_bytes())
            time.sleep(0.005)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    trim = libc.malloc_trim if setting == "trim" else None
    if threaded:
        worker = threading.Thread(target=_steps, args=(trainer, steps, trim, result))
        worker.start()
        worker.join()
    else:
        _steps(trainer, steps, trim, result)
    stop.set()
    watcher.join()
    task = trainer.task  # how many nodes a step's neighbourhood holds (a collective)
    batch = next(iter(task.epoch(2)))
    seeds = torch.unique(torch.cat([batch.user, batch.pos + task.graph.num_users,
                                    batch.neg + task.graph.num_users]))
    sampled = task.neighbors.sample(seeds).nodes.numel()
    if rank == 0:
        out.put({"setup_mb": setup / MB, "steps_peak_mb": peak[0] / MB,
                 "sampled_nodes": sampled, **result})
    dist.destroy_process_group()


def measure(run: ShardedRun, variant: str, steps: int, port: int) -> dict:
    import torch.multiprocessing as mp

    _, environment, _ = VARIANTS[variant]
    saved = {name: os.environ.get(name) for name in environment}
    os.environ.update(environment)  # read by glibc when the spawned processes start
    try:
        context = mp.get_context("spawn")
        out = context.Queue()
        ranks = [context.Process(target=rank_main, args=(rank, run, variant, steps, port, out))
                 for rank in range(2)]
        for process in ranks:
            process.start()
        row = out.get(timeout=RANK_TIMEOUT_S)  # a rank that died says so in its traceback
        for process in ranks:
            process.join()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return {"variant": variant, **row}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--edges", type=int, default=3_000_000)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=1024, help="triples per worker step")
    args = parser.parse_args()
    if args.steps <= WARMUP_STEPS:
        parser.error(f"--steps must be more than the {WARMUP_STEPS} untimed warm-up steps")
    import ray

    from bc_ray.core.train_config import TrainConfig
    from bc_ray.models.graphsage.spec import VersionSpec
    from bc_ray.partition.edge_files import EdgeFiles
    from bc_ray.train.sharded import plan_owners, row_bytes

    store, num_users, num_items = synthetic_store(scratch_dir("bench-worker-arenas-"),
                                                  args.edges)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             logging_level=logging.WARNING)
    files = EdgeFiles.of(store, store.state(), num_users, num_items)
    spec = VersionSpec(num_layers=2, hidden_dim=HIDDEN)
    train = TrainConfig(batch_size=args.batch_size, fanout=10, mode="sampled",
                        sparse_ids_min_nodes=0, id_optimizer="rowwise_adagrad")
    owners = plan_owners(files, 2, row_bytes(spec, PREVIOUS_DIM, train.id_optimizer))
    ray.shutdown()
    run = ShardedRun(files, owners, spec, train, CUTOFF)
    rows = []
    for index, variant in enumerate(VARIANTS):
        rows.append(measure(run, variant, args.steps, 29_500 + index))
        print(f"  {variant}: steps peak {rows[-1]['steps_peak_mb']:,.0f} MB, "
              f"{rows[-1]['s_per_step']:.3f} s/step", flush=True)
        write_json("worker-arenas", {"edges": args.edges, "steps": args.steps,
                                     "batch_size": args.batch_size, "results": rows})
    base = next(r for r in rows if r["variant"] == "worker thread")
    print_table(f"A sharded worker's memory during the steps, by allocator setting "
                f"({args.edges:,} edges, W=2, rank 0, {args.steps} steps of {args.batch_size} "
                f"per worker, {os.cpu_count()} cores; MB private)",
                ["variant", "after setup", "steps peak", "above setup", "KB per sampled node",
                 "s/step", "vs worker thread"],
                [[r["variant"], f"{r['setup_mb']:,.0f}", f"{r['steps_peak_mb']:,.0f}",
                  f"{r['steps_peak_mb'] - r['setup_mb']:,.0f}",
                  f"{(r['steps_peak_mb'] - r['setup_mb']) * MB / 1024 / r['sampled_nodes']:.1f}",
                  f"{r['s_per_step']:.3f}", f"{r['s_per_step'] / base['s_per_step']:.2f}x"]
                 for r in rows])


if __name__ == "__main__":
    main()
