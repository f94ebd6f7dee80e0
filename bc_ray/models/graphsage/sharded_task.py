"""GraphSAGE's BPR task when no worker holds the whole graph or the whole ID tables.

Worker r owns a range of users and a range of items (`RowOwners`). It holds their CSR rows
(`LocalRows`, built from the edges of those nodes only), their ID embeddings with their
optimizer state (`ShardedEmbedding`), and draws its triples from its own users' edges: a user's
every positive is local, so the negatives are re-drawn against them locally too. A step
samples neighbourhoods through the owners (`PartitionedNeighborSampler`), looks the sampled
nodes' ID rows up from their owners, and after the backward pass sends those rows' gradients
back (`after_backward`). The dense weights (feature bags, layers, B_k) stay data-parallel under DDP.

What every worker still holds whole is O(nodes), not O(edges): the entities' features and
first-seen times, and the alignment mask (targets are sharded: `ShardedAlignment`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from bc_ray.core.encoders import ID_INIT_STD
from bc_ray.core.family import TaskStep
from bc_ray.core.graph import GraphTensors
from bc_ray.core.losses import bpr_loss, embedding_l2
from bc_ray.core.node_rows import row_keys, rows_of_keys
from bc_ray.core.row_shards import RowOwners, ShardedEmbedding
from bc_ray.core.train_config import TrainConfig
from bc_ray.core.triples import Triples, TripleSampler
from bc_ray.exceptions import ConfigError, TrainingError
from bc_ray.models.graphsage.model import EmbeddingModel
from bc_ray.models.graphsage.partitioned_sampler import PartitionedNeighborSampler
from bc_ray.models.graphsage.spec import VersionSpec
from bc_ray.models.graphsage.task import TripleBatches


@dataclass(frozen=True)
class LocalRows:
    """The CSR rows of the nodes worker `rank` owns: its users, then its items; neighbours as
    global node ids (users 0..U-1, items U..)."""

    owners: RowOwners
    rank: int
    crow: np.ndarray
    neighbours: np.ndarray

    @classmethod
    def from_edges(cls, owners: RowOwners, rank: int, edge_user: np.ndarray,
                   edge_item: np.ndarray) -> LocalRows:
        """From edges (entity indices) that include every edge of the owned nodes; the rest
        are ignored."""
        return cls.from_keys(owners, rank, cls.keys_of(owners, rank, edge_user, edge_item))

    @staticmethod
    def keys_of(owners: RowOwners, rank: int, edge_user: np.ndarray,
                edge_item: np.ndarray) -> np.ndarray:
        """The keys (`row_keys`) of the ends in worker `rank`'s rows, its users' then its
        items' (numbered on from its last user): what a stream of edges keeps, a batch at a
        time, 8 bytes an end."""
        num_users, num_nodes = owners.num_users, owners.num_users + owners.num_items
        (first_user, last_user), (first_item, last_item) = (owners.users_of(rank),
                                                            owners.items_of(rank))
        users = row_keys(edge_user, edge_item, num_users, num_nodes, first_user, last_user)
        items = row_keys(edge_user, edge_item, num_users, num_nodes, num_users + first_item,
                         num_users + last_item)
        items += (last_user - first_user) * num_nodes
        return np.concatenate([users, items])

    @classmethod
    def from_keys(cls, owners: RowOwners, rank: int, keys: np.ndarray) -> LocalRows:
        """From every key of the worker's rows (`keys_of`), consumed: its rows are made of
        them in place."""
        crow, neighbours = rows_of_keys(keys, owners.num_rows(rank),
                                        owners.num_users + owners.num_items)
        return cls(owners, rank, crow, neighbours)

    @property
    def num_user_rows(self) -> int:
        first, last = self.owners.users_of(self.rank)
        return last - first

    def user_edges(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(user, item) entity indices of the owned users' edges, each once."""
        first, _ = self.owners.users_of(self.rank)
        ends = int(self.crow[self.num_user_rows])
        lengths = np.diff(self.crow[: self.num_user_rows + 1])
        users = np.repeat(np.arange(first, first + self.num_user_rows), lengths)
        items = self.neighbours[:ends] - self.owners.num_users
        return torch.from_numpy(users), torch.from_numpy(items)

    def user_edges_of(self, users: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`user_edges` of the owned `users` (entity indices) only, read from their rows."""
        first, last = self.owners.users_of(self.rank)
        if users.numel() and (int(users.min()) < first or int(users.max()) >= last):
            raise ValueError(f"users outside worker {self.rank}'s range {first}..{last - 1}")
        rows = users.numpy() - first
        starts, ends = self.crow[rows], self.crow[rows + 1]
        lengths = ends - starts
        within = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        items = self.neighbours[np.repeat(starts, lengths) + within] - self.owners.num_users
        return (torch.from_numpy(np.repeat(users.numpy(), lengths)),
                torch.from_numpy(np.ascontiguousarray(items)))

    @property
    def nbytes(self) -> int:
        return self.crow.nbytes + self.neighbours.nbytes


def sharded_model(spec: VersionSpec, graph: GraphTensors) -> EmbeddingModel:
    """The model without its ID tables, whose rows live in the task's `ShardedEmbedding` (its
    `inputs` then need the ID rows of the nodes given: `forward(graph, sample, id_rows)`)."""
    model = EmbeddingModel(spec, 0, 0, graph.user_vocab, graph.item_vocab)
    model.ids = nn.ModuleDict()
    return model


def initial_id_rows(owners: RowOwners, rank: int, dim: int, seed: int) -> torch.Tensor:
    """This worker's rows of freshly initialised ID tables (as `id_tables` draws them)."""
    generator = torch.Generator().manual_seed(seed * 104_729 + rank)
    return torch.randn(owners.num_rows(rank), dim, generator=generator) * ID_INIT_STD


def agreed(count: int, reduce: Literal["min", "max"] = "min") -> int:
    """The smallest (or the largest) of every worker's `count`: calls that are collectives must
    be as many on every worker."""
    if not (dist.is_available() and dist.is_initialized()):
        return count
    value = torch.tensor([count])
    dist.all_reduce(value, op=dist.ReduceOp.MAX if reduce == "max" else dist.ReduceOp.MIN)
    return int(value.item())


class ShardedLinkPredictionTask:
    def __init__(self, model: EmbeddingModel, graph: GraphTensors, rows: LocalRows,
                 config: TrainConfig, id_rows: torch.Tensor, *, rank: int = 0,
                 world_size: int = 1, item_pool: torch.Tensor | None = None) -> None:
        """`graph`: the entities' features and first-seen times (its edges are not used);
        `id_rows`: this worker's rows of the ID tables (`initial_id_rows`, or a warm start's;
        the rows of entities without edges are zeroed in place)."""
        if rows.owners.workers != world_size or rows.rank != rank:
            raise ConfigError(f"rows of worker {rows.rank} of {rows.owners.workers} given to "
                              f"worker {rank} of {world_size}")
        rows.owners.check(graph.num_users, graph.num_items)
        if not model.spec.id_embeddings:
            raise ConfigError("sharded ID tables need a model with ID embeddings")
        if config.fanout == 0:
            raise ConfigError("sharded training samples neighbourhoods: set a fanout")
        self.graph, self.config, self.rank, self.world_size = graph, config, rank, world_size
        self.rows = rows
        # Entities without training edges keep a zero ID row that never moves, as in the
        # one-table loop (`zero_unseen_ids`): they stand for "never seen".
        seen = torch.from_numpy(np.diff(rows.crow) > 0)
        id_rows[~seen] = 0.0
        self.ids = ShardedEmbedding(rows.owners, id_rows, config.id_table_lr,
                                    trainable=seen.unsqueeze(1).to(id_rows.dtype),
                                    optimizer=config.id_optimizer)
        self.sparse_parameters: list[nn.Parameter] = []
        user_crow = rows.crow[:rows.num_user_rows + 1]
        if user_crow[-1] == 0:
            raise TrainingError(f"worker {rank} owns no user with an edge: too many workers "
                                "for this graph")
        # Triples drawn from the users' CSR rows themselves (their neighbours are items, as
        # global node ids): no copy of the edges (8 bytes per edge, 0.6 GB at 100M).
        self.triples = TripleSampler.from_rows(
            user_crow, rows.neighbours[:user_crow[-1]], rows.owners.users_of(rank)[0],
            graph.num_items, graph.num_users, config.negatives, config.user_uniform, item_pool)
        generator = torch.Generator().manual_seed(config.seed * 7919 + rank)
        self.neighbors = PartitionedNeighborSampler(
            rows.owners, rows.crow, rows.neighbours, [config.fanout] * model.spec.num_layers,
            generator)

    def epoch(self, epoch: int) -> TripleBatches:
        """This worker's triples of `epoch`, from its users' edges; every worker takes as many
        steps as the one with the fewest (under a budget, the budget's)."""
        size = None
        if self.config.edges_per_epoch or self.config.max_steps:
            size = self.config.steps_in_epoch(1 << 62, self.world_size, 0) * self.config.batch_size
        seed = (self.config.seed * 1_000_003 + epoch) * 131 + self.rank
        triples = self.triples.epoch(seed=seed, size=size)
        steps = agreed(len(triples) // self.config.batch_size or 1)
        return TripleBatches(triples.slice(0, steps * self.config.batch_size),
                             self.config.batch_size)

    def examples(self, batch: Triples) -> int:
        return len(batch)

    def step(self, model: nn.Module, batch: Triples) -> TaskStep:
        num_users = self.graph.num_users
        user, pos, neg = batch.user, batch.pos + num_users, batch.neg + num_users
        nodes = torch.unique(torch.cat([user, pos, neg]))
        sample = self.neighbors.sample(nodes)
        z = model(self.graph, sample, self.ids.lookup(sample.nodes))
        z_user, z_pos, z_neg = (z[torch.searchsorted(nodes, part)] for part in (user, pos, neg))
        bpr = bpr_loss(z_user, z_pos, z_neg)
        loss = bpr + self.config.reg * embedding_l2(z_user, z_pos, z_neg)
        return TaskStep(loss, nodes, z, parts={"bpr": bpr.detach()})

    def rows_state(self) -> torch.Tensor:
        """This worker's ID rows as they are now (model selection keeps the best epoch's)."""
        return self.ids.weight.detach().clone()

    def load_rows_state(self, rows: torch.Tensor) -> None:
        with torch.no_grad():
            self.ids.weight.copy_(rows)

    def after_backward(self) -> None:
        """Send the ID rows' gradients to their owners, which step their rows."""
        self.ids.apply_gradients()

    @property
    def nbytes(self) -> dict[str, int]:
        """What this worker holds of the graph and the ID tables."""
        return {"graph_rows": self.rows.nbytes, "id_rows": self.ids.nbytes}
