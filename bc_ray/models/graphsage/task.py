"""GraphSAGE's training task: BPR link prediction on (user, positive, negative) triples.

Full-graph steps (every step propagates the whole graph, as the reference does) for small graphs;
neighbour-sampled mini-batches for large ones (`TrainConfig.mode`). Data-parallel ranks draw the
same epoch of triples from the shared seed and each trains on an equal contiguous shard, so all
ranks take the same number of steps.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from bc_ray.core.family import TaskStep
from bc_ray.core.graph import GraphTensors
from bc_ray.core.losses import bpr_loss, embedding_l2
from bc_ray.core.sparse_rows import row_sparse_tables
from bc_ray.core.train_config import TrainConfig
from bc_ray.core.triples import Triples, TripleSampler
from bc_ray.exceptions import TrainingError
from bc_ray.models.graphsage.model import EmbeddingModel
from bc_ray.models.graphsage.sampler import NeighborSampler


class TripleBatches(Sequence):
    """One rank's triples of an epoch, cut into steps of `batch_size`."""

    def __init__(self, triples: Triples, batch_size: int) -> None:
        self.triples, self.batch_size = triples, batch_size

    def __len__(self) -> int:
        return math.ceil(len(self.triples) / self.batch_size)

    def __getitem__(self, index: int) -> Triples:
        if not 0 <= index < len(self):
            raise IndexError(index)
        start = index * self.batch_size
        return self.triples.slice(start, start + self.batch_size)


class LinkPredictionTask:
    def __init__(self, model: EmbeddingModel, graph: GraphTensors, config: TrainConfig, *,
                 rank: int = 0, world_size: int = 1, item_pool: torch.Tensor | None = None,
                 device: torch.device | None = None) -> None:
        self.device = torch.device(device or "cpu")
        self.graph = graph if self.device.type == "cpu" else graph.to(self.device)
        self.config, self.rank, self.world_size = config, rank, world_size
        self.triples = TripleSampler(graph.edge_user, graph.edge_item, graph.num_items,
                                     config.negatives, config.user_uniform, item_pool)
        self.full_graph = config.mode == "full" or (
            config.mode == "auto" and graph.num_nodes <= config.full_graph_max_nodes)
        # A mini-batch of a large graph touches few ID rows: row-sparse gradients and lazy Adam.
        row_sparse = not self.full_graph and graph.num_nodes > config.sparse_ids_min_nodes
        self.sparse_parameters = row_sparse_tables(model, row_sparse, config.id_optimizer)
        generator = torch.Generator().manual_seed(config.seed * 7919 + rank)
        self.neighbors = None if self.full_graph else NeighborSampler(
            graph.adjacency(), [config.fanout] * model.spec.num_layers, generator)

    def epoch_triples(self, epoch: int) -> Triples:
        size = None
        if self.config.edges_per_epoch or self.config.max_steps:  # a budget: draw only its steps
            steps = self.config.steps_in_epoch(1 << 62, self.world_size, 0)
            size = steps * self.config.batch_size * self.world_size
        triples = self.triples.epoch(seed=self.config.seed * 1_000_003 + epoch, size=size)
        share = len(triples) // self.world_size
        if share == 0:
            raise TrainingError(f"{len(triples)} training edges cannot be shared by "
                                f"{self.world_size} workers")
        return triples.slice(self.rank * share, (self.rank + 1) * share)

    def epoch(self, epoch: int) -> TripleBatches:
        return TripleBatches(self.epoch_triples(epoch), self.config.batch_size)

    def examples(self, batch: Triples) -> int:
        return len(batch)

    def step(self, model: nn.Module, batch: Triples) -> TaskStep:
        num_users = self.graph.num_users
        user, pos, neg = (part.to(self.device) for part in (batch.user, batch.pos + num_users,
                                                            batch.neg + num_users))
        nodes = torch.unique(torch.cat([user, pos, neg]))
        if self.full_graph:
            z_all = model(self.graph, None)
            z, z_user, z_pos, z_neg = z_all[nodes], z_all[user], z_all[pos], z_all[neg]
        else:
            sample = self.neighbors.sample(nodes.cpu()).to(self.device)
            z = model(self.graph, sample)
            z_user, z_pos, z_neg = (z[torch.searchsorted(nodes, part)] for part in (user, pos, neg))
        bpr = bpr_loss(z_user, z_pos, z_neg)
        loss = bpr + self.config.reg * embedding_l2(z_user, z_pos, z_neg)
        return TaskStep(loss, nodes, z, parts={"bpr": bpr.detach()})
