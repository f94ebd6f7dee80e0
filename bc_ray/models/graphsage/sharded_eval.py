"""Scoring a candidate M_k whose ID tables and graph are sharded across the training workers.

The one-table gate embeds the whole graph in one process and ranks every item for each held-out
user. Here each worker embeds the nodes it owns from neighbourhoods drawn through their owners
(`PartitionedNeighborSampler`), and rank 0 receives only what the ranking needs: every item's
embedding, the held-out users' embeddings and their training items (from their owners' CSR
rows). Recall@k is the same function the one-table gate calls. Every worker calls
`sharded_recall` together: its steps are collectives.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist

from bc_ray.core.evaluation import recall_at_k
from bc_ray.core.row_shards import exchange
from bc_ray.models.graphsage.model import EmbeddingModel
from bc_ray.models.graphsage.partitioned_sampler import PartitionedNeighborSampler
from bc_ray.models.graphsage.sharded_task import ShardedLinkPredictionTask, agreed

EVAL_CHUNK = 4_096


def _rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _to_rank0(values: torch.Tensor) -> torch.Tensor:
    """Every worker's `values`, concatenated in rank order on rank 0 (empty elsewhere)."""
    _, world = _rank_world()
    splits = [0] * world
    splits[0] = values.shape[0]
    return exchange(values.contiguous(), splits)[0]


@torch.no_grad()
def sharded_embed(task: ShardedLinkPredictionTask, model: EmbeddingModel, nodes: torch.Tensor,
                  fanout: int, seed: int = 0, chunk: int = EVAL_CHUNK) -> torch.Tensor:
    """z of `nodes` (sorted global ids this worker owns), each from its own neighbourhood drawn
    at `fanout` (-1: all neighbours, which equals the full-graph forward)."""
    rank, _ = _rank_world()
    model.eval()
    sampler = PartitionedNeighborSampler(
        task.rows.owners, task.rows.crow, task.rows.neighbours,
        [fanout] * model.spec.num_layers, torch.Generator().manual_seed(seed * 7919 + rank))
    parts = [nodes[start:start + chunk] for start in range(0, nodes.numel(), chunk)]
    out = []
    for index in range(agreed(len(parts), max)):  # workers with fewer chunks send empty ones
        part = parts[index] if index < len(parts) else nodes[:0]
        sample = sampler.sample(part)
        out.append(model(task.graph, sample, task.ids.rows_of(sample.nodes)))
    return torch.cat(out) if out else torch.zeros(0, model.spec.output_dim)


def sharded_recall(task: ShardedLinkPredictionTask, model: EmbeddingModel,
                   eval_user: torch.Tensor, eval_item: torch.Tensor, fanout: int, k: int = 50,
                   item_pool: torch.Tensor | None = None, seed: int = 0) -> float:
    """Recall@k of the held-out (user, item) pairs (entity indices, the same on every worker),
    ranking every item of `item_pool` against each held-out user's training items excluded; the
    value on every worker."""
    rank, _ = _rank_world()
    owners = task.rows.owners
    (first_user, last_user), (first_item, last_item) = (owners.users_of(rank),
                                                        owners.items_of(rank))
    items = torch.arange(first_item, last_item) + owners.num_users
    z_items = _to_rank0(sharded_embed(task, model, items, fanout, seed))
    users = torch.unique(eval_user)
    mine = users[(users >= first_user) & (users < last_user)]
    z_users = _to_rank0(sharded_embed(task, model, mine, fanout, seed + 1))
    order = _to_rank0(mine)  # held-out users as rank 0 receives their rows
    known_user, known_item = task.rows.user_edges()
    held = torch.from_numpy(np.isin(known_user.numpy(), mine.numpy()))
    known_user, known_item = _to_rank0(known_user[held]), _to_rank0(known_item[held])
    result = torch.zeros(1, dtype=torch.float64)
    if rank == 0:
        # Held-out users renumbered 0..n-1 in the order their rows arrived.
        lookup = torch.full((owners.num_users,), -1, dtype=torch.long)
        lookup[order] = torch.arange(order.numel())
        result[0] = recall_at_k(z_users, z_items, lookup[eval_user], eval_item,
                                lookup[known_user], known_item, item_pool=item_pool, k=k)
    if dist.is_available() and dist.is_initialized():
        dist.broadcast(result, src=0)
    return float(result[0])
