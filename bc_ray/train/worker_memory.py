"""What a sharded bump's worker holds, and whether the cluster can place every worker, known
before any starts.

A worker's state is its rows: for each node it owns, its ID row with the optimizer's state and
its alignment target (`sharded.row_bytes`) and its CSR row (8 bytes a neighbour, and the row's
pointer). Its peak is a multiple of that (`PEAK_OVER_STATE`). Ray does not bound a train
worker's memory: a bump whose workers cannot hold their share would start, read the graph,
warm-start and be killed by the memory monitor within its steps (as Adam at 100M edges over two
workers was here: RESULTS §10). So each worker asks Ray for its peak as its `memory` resource,
Ray places it where that much is free, and a cluster that cannot place them all is refused
with what helps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bc_ray.core.row_shards import RowOwners
from bc_ray.exceptions import ConfigError
from bc_ray.partition.task_memory import MB
from bc_ray.placement import placeable as placeable_bundles

# A sharded worker's private peak against its state, measured at 100M edges over two workers
# (RESULTS §10, runs 12-14: 1.76-1.90x, the warm start the highest stage; the O(N) entity tables
# and the process group's buffers included). The middle of that, not its top: a plan refused
# here that would have run costs more than a run that asked Ray for a little less than it took.
PEAK_OVER_STATE = 1.8
CSR_BYTES = 8  # a CSR row's neighbour ids, and its pointer, are int64


def worker_state_bytes(owners: RowOwners, degrees: np.ndarray, bytes_per_row: int) -> list[int]:
    """Per rank, what its rows hold: `bytes_per_row` (`sharded.row_bytes`) and a CSR pointer for
    each node it owns, and a neighbour id for each of their edge ends (`degrees`, repeats
    counted, held-out edges too: an upper bound on the CSR rows, which hold each pair once)."""
    sums = np.concatenate([[0], np.cumsum(degrees, dtype=np.int64)])
    held = []
    for rank in range(owners.workers):
        (first_user, last_user), (first_item, last_item) = (owners.users_of(rank),
                                                            owners.items_of(rank))
        ends = (sums[last_user] - sums[first_user]
                + sums[owners.num_users + last_item] - sums[owners.num_users + first_item])
        held.append(owners.num_rows(rank) * (bytes_per_row + CSR_BYTES) + CSR_BYTES * int(ends))
    return held


def peak_bytes(state: tuple[int, ...] | list[int]) -> int:
    """The memory each worker asks Ray for: the largest worker's peak."""
    return int(PEAK_OVER_STATE * max(state))


def placeable(cpus: float, memory: int, nodes: list[dict]) -> int:
    """How many workers of `cpus` CPUs and `memory` bytes the alive nodes can hold at once."""
    return placeable_bundles({"CPU": cpus, "memory": float(max(memory, 1))}, nodes)


@dataclass(frozen=True)
class WorkerMemory:
    """A sharded bump's plan of its workers' memory."""

    state: tuple[int, ...]  # per rank: what its rows hold (`worker_state_bytes`)
    request: int | None  # the `memory` each worker asks Ray for; None where no node states one

    @property
    def resources(self) -> dict[str, float]:
        """A worker's resources beside its CPUs."""
        return {} if self.request is None else {"memory": float(self.request)}


def plan_worker_memory(owners: RowOwners, degrees: np.ndarray, bytes_per_row: int,
                       cpus: float, nodes: list[dict], aligned: bool) -> WorkerMemory:
    """Each worker's state, and the memory each asks Ray for: its peak, as the largest worker's
    state gives it. A cluster that cannot place every worker (`nodes`: `ray.nodes()`, those
    alive now, after the autoscaler, where one runs, was asked for them: `Placement.wait`) is
    refused, before any starts, saying what helps."""
    state = tuple(worker_state_bytes(owners, degrees, bytes_per_row))
    alive = [node for node in nodes if node.get("Alive")]
    if not any("memory" in node.get("Resources", {}) for node in alive):
        return WorkerMemory(state, None)
    need = peak_bytes(state)
    fits = placeable(cpus, need, alive)
    if fits < owners.workers:
        raise ConfigError(_refusal(owners.workers, state, need, fits, cpus, alive, aligned))
    return WorkerMemory(state, need)


def _refusal(workers: int, state: tuple[int, ...], need: int, fits: int, cpus: float,
             alive: list[dict], aligned: bool) -> str:
    """What does not fit, and what helps: where the nodes' memory is short of every worker's
    peak together, no count of workers helps (each one's share falls as 1/W, never the sum);
    where it is not, smaller workers fill the nodes' memory better."""
    total = sum(node["Resources"].get("memory", 0.0) for node in alive)
    together = PEAK_OVER_STATE * sum(state)
    targets = ", its alignment targets" if aligned else ""
    said = (f"a sharded bump over {workers} workers: the largest holds {max(state) / MB:,.0f} MB "
            f"(its ID rows with their optimizer state{targets} and its CSR rows) and peaks near "
            f"{PEAK_OVER_STATE:g}x that, {need / MB:,.0f} MB; ")
    lighter = "--id-optimizer rowwise_adagrad (one float of state per row, not 2 d)"
    if together > total:
        return (said + f"the workers together peak near {together / MB:,.0f} MB and the "
                f"cluster's nodes have {total / MB:,.0f} MB for Ray's workers: use {lighter}, "
                "or more memory (more or larger nodes; a smaller object store leaves Ray's "
                "workers more)")
    return (said + f"the cluster can place {fits} such worker(s) of {cpus:g} CPU: use more, "
            "smaller workers (--num-workers, with fewer --cpus-per-worker where CPUs run out), "
            f"{lighter}, or larger nodes")
