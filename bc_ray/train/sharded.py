"""Ray Train workers that hold only their share of the graph and of the ID tables.

The driver counts degrees with one Ray task per edge file (as the partitioned refresh does) and
cuts users and items into one range each per worker (`plan_owners`). The workers then stream
the snapshot's edge files, each its share of them, and send every end to the worker whose row
it is (`read_local_rows`, `edge_exchange`): no process reads the edge list into memory whole,
and a worker's CSR rows, ID rows and their optimizer state are about 1/W of the whole.
`sharded_trainer` puts the pieces into the same `VersionTrainer` the replicated loop runs, so
steps, budgets and the BC-Aligner loss are the ones `bc-ray train` uses.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import ray
import torch

from bc_ray.core.graph import GraphTensors, build_graph
from bc_ray.core.node_rows import drained
from bc_ray.core.row_shards import RowOwners, group_size
from bc_ray.core.sparse_rows import id_state_floats
from bc_ray.core.train_config import TrainConfig
from bc_ray.core.trainer import Alignment, VersionTrainer
from bc_ray.exceptions import TrainingError
from bc_ray.memory import return_freed_memory
from bc_ray.models.graphsage.sharded_task import (
    LocalRows,
    ShardedLinkPredictionTask,
    initial_id_rows,
    sharded_model,
)
from bc_ray.models.graphsage.spec import VersionSpec
from bc_ray.partition.edge_files import EdgeFiles, count_degrees
from bc_ray.store.snapshots import load_entities
from bc_ray.store.state import StoreState
from bc_ray.store.store import Store
from bc_ray.train.edge_exchange import exchanged_keys
from bc_ray.train.held_out import HeldOut


@dataclass(frozen=True)
class ShardedRun:
    """What every worker of a sharded run is given: the snapshot's edge files, who owns which
    rows, the model and the loop's settings."""

    files: EdgeFiles
    owners: RowOwners
    spec: VersionSpec
    train: TrainConfig
    now: float
    held_out: HeldOut | None = None  # a bump's: train on what it leaves, score on what it holds
    state: StoreState | None = None  # the store as the driver planned by (None: as it is now)
    first_seen: ray.ObjectRef | None = None  # `FirstInteractions`, where the entity tables
    # lack them (an age-aware model of an ingested snapshot: `ages_need_edges`)

    def local_rows(self, rank: int) -> LocalRows:
        """Worker `rank`'s CSR rows of the training edges."""
        if self.held_out is None:
            return read_local_rows(self.files, self.owners, rank)
        return read_local_rows(replace(self.files, until=self.held_out.start), self.owners,
                               rank, self.held_out.extra)


def row_bytes(spec: VersionSpec, target_dim: int = 0, id_optimizer: str = "adam") -> int:
    """What a worker holds per node it owns besides its CSR row: the ID row and its optimizer
    state, and its alignment target when aligned."""
    return 4 * (spec.hidden_dim + id_state_floats(id_optimizer, spec.hidden_dim) + target_dim)


def plan_owners(files: EdgeFiles, workers: int, bytes_per_row: int = 0,
                user_uniform: bool = True, cpus: float = 1.0, budget: int | None = None,
                degrees: np.ndarray | None = None) -> RowOwners:
    """Users and items cut into `workers` ranges each (`RowOwners.balanced`; `bytes_per_row`:
    `row_bytes`). Driver side, before any worker starts: a degree per node, counted by one Ray
    task per edge file (unless given: `count_degrees`), and a worker count that leaves every
    worker users to train on."""
    if degrees is None:
        degrees = count_degrees(files, cpus, budget)
    users = degrees[:files.num_users]
    owners = RowOwners.balanced(users, degrees[files.num_users:], workers, bytes_per_row,
                                user_uniform)
    for rank in range(workers):
        first, last = owners.users_of(rank)
        if not users[first:last].any():
            raise TrainingError(f"{workers} workers for {int((users > 0).sum())} users with "
                                f"interactions: worker {rank} would have none to train on; use "
                                "fewer workers")
    return owners


def read_local_rows(files: EdgeFiles, owners: RowOwners, rank: int,
                    extra: tuple[np.ndarray, np.ndarray] | None = None) -> LocalRows:
    """Worker `rank`'s CSR rows, from a stream of the edge files (a batch at a time, keeping
    only the ends in the rows it owns, 8 bytes each: `LocalRows.keys_of`) and the `extra`
    edges (a held-out split's new users'). In the owners' process group each file is read by
    one worker and the ends are sent to theirs (`edge_exchange`, a collective); a process
    alone, or a snapshot in one file (one worker would read it while the rest waited), reads
    every file. The rows merge repeated (user, item) pairs, as `load_ingested` does."""
    shared = owners.workers > 1 and group_size() == owners.workers and len(files.files) > 1
    keys = exchanged_keys(files, owners, rank) if shared else own_keys(files, owners, rank)
    if extra is not None:
        keys.append(LocalRows.keys_of(owners, rank, *extra))
    rows = LocalRows.from_keys(owners, rank, drained(keys, return_freed_memory))
    return_freed_memory()  # the stream's pages
    return rows


def own_keys(files: EdgeFiles, owners: RowOwners, rank: int) -> list[np.ndarray]:
    """Worker `rank`'s ends' keys, read from every file by this process alone."""
    return [LocalRows.keys_of(owners, rank, edges[0], edges[1])
            for index in range(len(files.files)) for edges in files.edges(index)]


def entity_graph(run: ShardedRun) -> GraphTensors:
    """The entities' features and first-seen times, without edges: O(nodes) per worker."""
    store = Store(run.files.store_uri, run.files.options)
    entities = load_entities(store, run.state or store.state())
    if run.first_seen is not None:
        entities = ray.get(run.first_seen).applied(entities)
    return build_graph(entities, entities.edges, run.now)


def sharded_trainer(run: ShardedRun, rank: int, world_size: int,
                    alignment: Alignment | None = None,
                    id_rows: torch.Tensor | None = None) -> VersionTrainer:
    """Worker `rank`'s trainer over its own rows (`id_rows`: its ID rows, fresh by default)."""
    graph = entity_graph(run)
    rows = run.local_rows(rank)
    model = sharded_model(run.spec, graph)
    if id_rows is None:
        id_rows = initial_id_rows(run.owners, rank, run.spec.hidden_dim, run.train.seed)
    task = ShardedLinkPredictionTask(model, graph, rows, run.train, id_rows, rank=rank,
                                     world_size=world_size)
    return VersionTrainer(model, graph, run.train, alignment, rank=rank, world_size=world_size,
                          task=task)
