"""A sharded run's edge ends, each edge file read by one worker: the workers share out the files,
key every end for the worker whose row it is, and send each worker its keys over the process
group they train in (torch.distributed's all-to-all, as the ID rows go), a round at a time.

Every worker used to read every file and keep its own ends: W reads of the graph, each worker
spending a whole read's time however many workers there were (3 of a 100M-interaction bump's 16
minutes here). Now the files are read once in all, 1/W of them by each worker. A worker holds
what it kept before (its ends' keys, 8 bytes each) and one round's keys of its files (at most
`ROUND_ENDS` and a record batch more) while they are sent.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist

from bc_ray.core.node_rows import by_owner, end_keys
from bc_ray.core.row_shards import RowOwners, exchange
from bc_ray.refresh.range_graphs import EdgeFiles

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


def exchanged_keys(files: EdgeFiles, owners: RowOwners, round_ends: int = ROUND_ENDS
                   ) -> list[np.ndarray]:
    """This worker's ends' keys from every file, each file read by one worker of the group: a
    collective every worker calls. Rounds go on until no worker has ends left to send."""
    rank, world = dist.get_rank(), dist.get_world_size()
    bounds = worker_bounds(owners)
    batches = (edges for index in worker_files(files, world)[rank]
               for edges in files.edges(index))
    received, exhausted = [], False
    while True:
        keys, workers, ends = [], [], 0
        while not exhausted and ends < round_ends:
            edges = next(batches, None)
            if edges is None:
                exhausted = True
                break
            worker, keyed = keyed_ends(owners, bounds, edges[0], edges[1])
            keys.append(keyed)
            workers.append(worker)
            ends += keyed.size
        grouped, cuts = by_owner(keys, workers, world)
        got, _ = exchange(torch.from_numpy(grouped), np.diff(cuts).tolist())
        del grouped
        received.append(got.numpy())
        more = torch.tensor([0 if exhausted else 1])
        dist.all_reduce(more, op=dist.ReduceOp.MAX)
        if not int(more):
            return received
