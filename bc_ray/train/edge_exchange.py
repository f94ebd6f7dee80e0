"""A sharded run's edge ends, each edge file read by one worker: the workers share out the files,
key every end for the worker whose row it is, and send each worker its keys over the process
group they train in (torch.distributed's all-to-all, as the ID rows go), a round at a time.

Every worker used to read every file and keep its own ends: W reads of the graph, each worker
spending a whole read's time however many workers there were. Now the files are read once in
all, about 1/W of them by each worker (RESULTS §10: from moto's S3 server on this 2-core
machine with 4 workers, 0.31–0.52x the time; from a local disk's page cache, where reading is
cheap, no measurable change). A worker
holds what it kept before (its ends' keys, 8 bytes each) and one round's keys of its files (at
most `ROUND_ENDS` and a record batch more) while they are sent. A worker that cannot read its
files says so to the others before the round's exchange, so they stop with it instead of
waiting on it.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist

from bc_ray.core.node_rows import by_owner, end_keys
from bc_ray.core.row_shards import RowOwners, exchange
from bc_ray.exceptions import TrainingError
from bc_ray.partition.edge_files import EdgeFiles

ROUND_ENDS = 1 << 21  # ends a worker keys before a round of the exchange (16 MB of keys)


def worker_files(files: EdgeFiles, workers: int) -> list[list[int]]:
    """The files each worker reads: the largest first, each to the worker with the fewest bytes
    so far (the same answer on every worker)."""
    load, shares = [0] * workers, [[] for _ in range(workers)]
    for index in sorted(range(len(files.files)), key=lambda i: -files.files[i].record.size):
        worker = load.index(min(load))
        load[worker] += files.files[index].record.size
        shares[worker].append(index)
    return [sorted(share) for share in shares]


def worker_bounds(owners: RowOwners) -> np.ndarray:
    """2W + 1 node ids: range w holds worker w's users, range W + w its items."""
    return np.concatenate([owners.user_bounds, owners.num_users + owners.item_bounds[1:]])


def keyed_ends(owners: RowOwners, bounds: np.ndarray, users: np.ndarray,
               items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(the worker of each end's row, its key there as `LocalRows.keys_of` makes it: a worker's
    item rows are numbered on from its last user row)."""
    owner, keys = end_keys(users, items, owners.num_users, bounds)
    workers = owners.workers
    item_end = owner >= workers
    worker = np.where(item_end, owner - workers, owner)
    user_rows = np.diff(owners.user_bounds)
    keys[item_end] += user_rows[worker[item_end]] * (owners.num_users + owners.num_items)
    return worker.astype(owner.dtype, copy=False), keys


def exchanged_keys(files: EdgeFiles, owners: RowOwners, rank: int,
                   round_ends: int = ROUND_ENDS) -> list[np.ndarray]:
    """Worker `rank`'s ends' keys from every file, each file read by one worker of the group: a
    collective every worker calls. Rounds go on until no worker has ends left to send."""
    world = dist.get_world_size()
    if (dist.get_rank(), world) != (rank, owners.workers):
        raise ValueError(f"worker {rank} of {owners.workers} called the exchange as rank "
                         f"{dist.get_rank()} of a group of {world}")
    bounds = worker_bounds(owners)
    batches = (edges for index in worker_files(files, world)[rank]
               for edges in files.edges(index))
    received, exhausted = [], False
    while True:
        keys, workers, ends, failed = [], [], 0, None
        try:
            while not exhausted and ends < round_ends:
                edges = next(batches, None)
                if edges is None:
                    exhausted = True
                    break
                worker, keyed = keyed_ends(owners, bounds, edges[0], edges[1])
                keys.append(keyed)
                workers.append(worker)
                ends += keyed.size
        except Exception as exc:  # noqa: BLE001 - raised below, once every worker knows
            failed = exc
        more = _round_status(rank, world, failed, exhausted)
        grouped, cuts = by_owner(keys, workers, world)
        got, _ = exchange(torch.from_numpy(grouped), np.diff(cuts).tolist())
        del grouped
        received.append(got.numpy())
        if not more:
            return received


def _round_status(rank: int, world: int, failed: Exception | None, exhausted: bool) -> bool:
    """Whether any worker has ends left after this round (a collective); raises on every worker
    when one could not read its files: its own error there, a `TrainingError` naming it on
    the others."""
    status = torch.zeros(world + 1, dtype=torch.int64)
    status[rank] = failed is not None
    status[world] = not exhausted
    dist.all_reduce(status, op=dist.ReduceOp.MAX)
    if failed is not None:
        raise failed
    if status[:world].any():
        broken = np.flatnonzero(status[:world].numpy()).tolist()
        raise TrainingError(f"worker(s) {broken} could not read their edge files (their own "
                            f"errors say why); worker {rank} stops with them")
    return bool(status[world])
