"""Row-sparse training of the ID embedding tables in mini-batch (sampled) mode.

A sampled step touches a few thousand of the tables' rows, yet a dense gradient makes every step
cost O(rows x dim): the backward pass fills a table-sized gradient, Adam updates every row, and
DDP all-reduces the whole table (176k nodes x 64 dims is 45 MB per step). Sparse gradients with
lazy Adam (`torch.optim.SparseAdam`, as large-embedding recommenders use) touch only the rows in
the batch. DDP is told to ignore the tables; `average_sparse_gradients` exchanges just the touched
rows between ranks (an all-gather, which NCCL and gloo both support, unlike sparse all-reduce).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


class CombinedOptimizer:
    """Adam for the dense parameters and SparseAdam for the row-sparse tables, stepped together
    (the one `optimizer` a trainer checkpoints and restores)."""

    def __init__(self, dense: list[nn.Parameter], sparse: list[nn.Parameter], lr: float) -> None:
        self.parts = [torch.optim.Adam(dense, lr=lr), torch.optim.SparseAdam(sparse, lr=lr)]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for part in self.parts:
            part.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for part in self.parts:
            part.step()

    def state_dict(self) -> dict:
        return {"parts": [part.state_dict() for part in self.parts]}

    def load_state_dict(self, state: dict) -> None:
        for part, saved in zip(self.parts, state["parts"], strict=True):
            part.load_state_dict(saved)


def masked_gradient(grad: torch.Tensor, trainable: torch.Tensor) -> torch.Tensor:
    """`grad` with the rows whose `trainable` flag is 0 zeroed, dense or sparse alike."""
    if not grad.is_sparse:
        return grad * trainable
    grad = grad.coalesce()
    rows = grad.indices()[0]
    return torch.sparse_coo_tensor(grad.indices(), grad.values() * trainable[rows], grad.shape,
                                   is_coalesced=True)


def average_sparse_gradients(parameters: list[nn.Parameter]) -> None:
    """Make every rank's sparse gradient the mean over ranks, as DDP does for dense ones.

    Each rank contributes the rows it touched; rows touched by several ranks are summed."""
    world = dist.get_world_size()
    for parameter in parameters:
        grad = parameter.grad
        if grad is None:
            grad = torch.sparse_coo_tensor(
                torch.zeros((1, 0), dtype=torch.long, device=parameter.device),
                parameter.new_zeros((0, *parameter.shape[1:])), parameter.shape)
        grad = grad.coalesce()
        rows, values = grad.indices()[0], grad.values()
        count = torch.tensor([rows.numel()], device=rows.device)
        counts = [torch.zeros_like(count) for _ in range(world)]
        dist.all_gather(counts, count)
        longest = int(max(c.item() for c in counts))
        padded_rows = rows.new_zeros(longest)
        padded_rows[: rows.numel()] = rows
        padded_values = values.new_zeros((longest, *values.shape[1:]))
        padded_values[: rows.numel()] = values
        all_rows = [torch.empty_like(padded_rows) for _ in range(world)]
        all_values = [torch.empty_like(padded_values) for _ in range(world)]
        dist.all_gather(all_rows, padded_rows)
        dist.all_gather(all_values, padded_values)
        kept = [int(c.item()) for c in counts]
        merged_rows = torch.cat([r[:n] for r, n in zip(all_rows, kept, strict=True)])
        merged_values = torch.cat([v[:n] for v, n in zip(all_values, kept, strict=True)])
        parameter.grad = torch.sparse_coo_tensor(
            merged_rows.unsqueeze(0), merged_values / world, parameter.shape).coalesce()
