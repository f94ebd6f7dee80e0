"""M_k's ID tables between one model file and rows sharded across training workers.

A sharded bump starts from M_{k-1}: each worker takes only its own rows of the previous tables
(`warm_id_rows`; from a mapped file it reads only those pages). It ends with one model file that
the refresh and Serve read: rank 0 gathers every worker's rows into whole tables
(`gathered_model`), the one moment a process holds them, as the file does, without Adam's
moments. Both are collectives: every worker calls them, in the same order.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from bc_ray.core.row_shards import RowOwners, exchange
from bc_ray.core.warmstart import NOISE, copy_overlap
from bc_ray.exceptions import ConfigError
from bc_ray.models.graphsage.model import EmbeddingModel

SHARDED_WARM_STARTS = ("off", "mean")


def _owned_spans(owners: RowOwners, rank: int) -> list[tuple[str, int, int, int]]:
    """(entity, first id, last id, offset in the worker's rows) of the users, then the items."""
    (a, b), (c, d) = owners.users_of(rank), owners.items_of(rank)
    return [("user", a, b, 0), ("item", c, d, b - a)]


def _global_sum(*values: torch.Tensor) -> list[torch.Tensor]:
    if dist.is_available() and dist.is_initialized():
        for value in values:
            dist.all_reduce(value)
    return list(values)


@torch.no_grad()
def warm_id_rows(previous: EmbeddingModel, owners: RowOwners, rank: int, fresh: torch.Tensor,
                 strategy: str = "mean", seed: int = 0) -> torch.Tensor:
    """This worker's ID rows started from M_{k-1}: the rows of entities its tables know are
    copied (their leading columns, when the widths differ, as the one-table warm start copies);
    entities new since it take `fresh`'s rows (`off`) or, as the one-table `mean` strategy, the
    mean of all known rows, taken over every worker, plus noise of a tenth of their spread."""
    if strategy not in SHARDED_WARM_STARTS:
        raise ConfigError(f"a sharded warm start is one of {SHARDED_WARM_STARTS}, not "
                          f"{strategy!r} (metadata needs every entity's features and rows)")
    if not previous.spec.id_embeddings:
        raise ConfigError(f"version {previous.spec} has no ID tables to start from")
    rows, known = fresh.clone(), torch.zeros(fresh.shape[0], dtype=torch.bool)
    for entity, first, last, offset in _owned_spans(owners, rank):
        table = previous.ids[entity].weight  # its last row is padding
        count = max(0, min(last, table.shape[0] - 1) - first)
        copy_overlap(rows[offset:offset + count], table[first:first + count])
        known[offset:offset + count] = True
    if strategy == "off":
        return rows
    width = min(rows.shape[1], previous.ids["user"].weight.shape[1])
    copied = rows[known][:, :width].double()
    total, squares, count = _global_sum(copied.sum(0), (copied ** 2).sum(0),
                                        torch.tensor([float(known.sum())], dtype=torch.double))
    new = ~known
    if new.any() and count.item() > 0:
        mean = total / count
        spread = (squares / count - mean ** 2).clamp(min=1e-12).sqrt()
        generator = torch.Generator().manual_seed(seed * 104_729 + rank)
        noise = torch.randn(int(new.sum()), width, generator=generator, dtype=torch.double)
        rows[new, :width] = (mean + noise * spread * NOISE).to(rows.dtype)
    return rows


@torch.no_grad()
def gathered_model(model: EmbeddingModel, rows: torch.Tensor,
                   owners: RowOwners) -> EmbeddingModel | None:
    """On rank 0, M_k whole: `model`'s dense weights (a `sharded_model`, equal on every worker
    after DDP) with every worker's ID `rows` in tables of the snapshot's size (their padding row
    zero, for entities the tables do not know); None on the other ranks."""
    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    splits = [0] * owners.workers
    splits[0] = rows.shape[0]
    received, counts = exchange(rows.detach(), splits)
    if rank != 0:
        return None
    whole = EmbeddingModel(model.spec, owners.num_users, owners.num_items,
                           model.encoders["user"].vocab_sizes, model.encoders["item"].vocab_sizes,
                           initialize=False)
    state = {k: v for k, v in model.state_dict().items() if not k.startswith("ids.")}
    tables = {entity: torch.zeros_like(whole.ids[entity].weight) for entity in ("user", "item")}
    start = 0
    for sender, count in enumerate(counts):
        for entity, first, last, offset in _owned_spans(owners, sender):
            tables[entity][first:last] = received[start + offset:start + offset + last - first]
        start += count
    state.update({f"ids.{entity}.weight": table for entity, table in tables.items()})
    whole.load_state_dict(state)
    return whole.eval()
