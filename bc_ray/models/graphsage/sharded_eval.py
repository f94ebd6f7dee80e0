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
from bc_ray.core.row_shards import owners_rank, to_rank0
from bc_ray.models.graphsage.model import EmbeddingModel
from bc_ray.models.graphsage.partitioned_sampler import PartitionedNeighborSampler
from bc_ray.models.graphsage.sharded_task import ShardedLinkPredictionTask, agreed

EVAL_CHUNK = 4_096


def _to_rank0(values: torch.Tensor) -> torch.Tensor:
    return to_rank0(values)[0]


@torch.no_grad()
def sharded_embed(task: ShardedLinkPredictionTask, model: EmbeddingModel, nodes: torch.Tensor,
                  fanout: int, seed: int = 0, chunk: int = EVAL_CHUNK) -> torch.Tensor:
    """z of `nodes` (sorted global ids this worker owns), each from its own neighbourhood drawn
    at `fanout` (-1: all neighbours, which equals the full-graph forward); `model`: a
    `sharded_model`, whose ID rows the task's owners send, or a whole model with its own."""
    rank = owners_rank()
    model.eval()  # the trainer sets train() again at its next epoch
    # M_{k-1} (the gate's parent) keeps its whole tables, mapped: it reads its rows itself.
    own_tables = len(model.ids) > 0
    sampler = PartitionedNeighborSampler(
        task.rows.owners, task.rows.crow, task.rows.neighbours,
        [fanout] * model.spec.num_layers, torch.Generator().manual_seed(seed * 7919 + rank))
    parts = [nodes[start:start + chunk] for start in range(0, nodes.numel(), chunk)]
    out = []
    for index in range(agreed(len(parts), "max")):  # workers with fewer chunks send empty ones
        part = parts[index] if index < len(parts) else nodes[:0]
        sample = sampler.sample(part)
        id_rows = None if own_tables else task.ids.rows_of(sample.nodes)
        out.append(model(task.graph, sample, id_rows))
    return torch.cat(out) if out else torch.zeros(0, model.spec.output_dim)


def sharded_recall(task: ShardedLinkPredictionTask, model: EmbeddingModel,
                   eval_user: torch.Tensor, eval_item: torch.Tensor, fanout: int, k: int = 50,
                   users: torch.Tensor | None = None, item_pool: torch.Tensor | None = None,
                   seed: int = 0, chunk: int = EVAL_CHUNK) -> float:
    """Recall@k of the held-out (user, item) pairs (entity indices, the same on every worker)
    over `users` (default: all of them; the gate takes the validation half), ranking every item
    of `item_pool` with each user's training items excluded, as `recall_at_k` does; the value
    on every worker."""
    rank = owners_rank()
    if users is not None:
        kept = torch.isin(eval_user, users)
        eval_user, eval_item = eval_user[kept], eval_item[kept]
    owners = task.rows.owners
    (first_user, last_user), (first_item, last_item) = (owners.users_of(rank),
                                                        owners.items_of(rank))
    items = torch.arange(first_item, last_item) + owners.num_users
    z_items = _to_rank0(sharded_embed(task, model, items, fanout, seed, chunk))
    held_out = torch.unique(eval_user)
    mine = held_out[(held_out >= first_user) & (held_out < last_user)]
    z_users = _to_rank0(sharded_embed(task, model, mine, fanout, seed + 1, chunk))
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
