"""Row-sparse training of the ID embedding tables in mini-batch (sampled) mode.

A sampled step touches a few thousand of the tables' rows, yet a dense gradient makes every step
cost O(rows x dim): the backward pass fills a table-sized gradient, Adam updates every row, and
DDP all-reduces the whole table (176k nodes x 64 dims is 45 MB per step). Sparse gradients with
lazy Adam (`torch.optim.SparseAdam`, as large-embedding recommenders use) touch only the rows in
the batch. DDP is told to ignore the tables; `average_sparse_gradients` exchanges just the touched
rows between ranks (an all-gather, which NCCL and gloo both support, unlike sparse all-reduce).

Adam's two moments are 2 d floats per row, twice the table itself; where the tables are what
fills a worker (sharded training at 100M interactions), `RowwiseAdagrad` keeps one float per
row instead.
"""

from __future__ import annotations

import logging

import torch
import torch.distributed as dist
from torch import nn

from bc_ray.exceptions import ConfigError

logger = logging.getLogger(__name__)


class RowwiseAdagrad(torch.optim.Optimizer):
    """Adagrad with one accumulator per row, the mean of the row's squared gradient (FBGEMM's
    exact row-wise Adagrad, which TorchRec's large tables train with): 4 bytes of state per
    row where lazy Adam keeps 8 d. Rows without a gradient in a step do not move; a row's
    first step is `lr` times its gradient over the gradient's root mean square, as Adam's is,
    and later ones shrink as the row's squared gradients add up."""

    def __init__(self, params, lr: float, eps: float = 1e-8) -> None:
        if lr <= 0:
            raise ValueError(f"learning rate must be > 0, got {lr}")
        super().__init__(params, {"lr": lr, "eps": eps})

    @torch.no_grad()
    def step(self, closure=None) -> None:
        if closure is not None:
            raise ValueError("RowwiseAdagrad takes no closure")
        for group in self.param_groups:
            for weight in group["params"]:
                if weight.grad is not None:
                    self._step_rows(weight, group["lr"], group["eps"])

    def _step_rows(self, weight: torch.Tensor, lr: float, eps: float) -> None:
        state = self.state[weight]
        if not state:
            state["sum"] = weight.new_zeros(weight.shape[0])
        grad = weight.grad
        if not grad.is_sparse or grad.sparse_dim() != 1:  # dense, or one index per value
            grad = grad.to_dense().to_sparse(1)  # the rows with a nonzero gradient
        grad = grad.coalesce()  # each row once
        rows, values = grad.indices()[0], grad.values()
        if values.numel() == 0:  # no row touched (a worker none asked, this step)
            return
        sums = state["sum"][rows] + values.flatten(1).square().mean(dim=1)
        state["sum"][rows] = sums
        scale = sums.sqrt().add_(eps).reciprocal_().mul_(-lr)
        weight.index_add_(0, rows, values * scale.view(-1, *([1] * (values.dim() - 1))))


def id_table_optimizer(name: str, tables: list[nn.Parameter], lr: float
                       ) -> torch.optim.Optimizer:
    """The optimizer of row-sparse ID tables: `TrainConfig.id_optimizer`."""
    if name == "rowwise_adagrad":
        return RowwiseAdagrad(tables, lr=lr)
    if name == "adam":
        return torch.optim.SparseAdam(tables, lr=lr)
    raise ValueError(f"no ID optimizer {name!r}")


def id_state_floats(name: str, dim: int) -> int:
    """Floats of optimizer state per row of a `dim`-wide table."""
    return 1 if name == "rowwise_adagrad" else 2 * dim


def row_sparse_tables(model: nn.Module, row_sparse: bool, id_optimizer: str
                      ) -> list[nn.Parameter]:
    """The ID tables a task trains row-sparse (`model.sparse_id_tables()`), none where its
    batches touch most rows; an ID optimizer other than Adam is then said to be unused."""
    if row_sparse:
        return model.sparse_id_tables()
    if id_optimizer != "adam":
        logger.warning("ID optimizer %s steps row-sparse ID tables only (sampled mode on a "
                       "large graph, or sharded): these train dense, with Adam", id_optimizer)
    return []


class CombinedOptimizer:
    """Adam for the dense parameters and the ID optimizer (`id_table_optimizer`) for the
    row-sparse tables, stepped together (the one `optimizer` a trainer checkpoints and
    restores)."""

    def __init__(self, dense: list[nn.Parameter], sparse: list[nn.Parameter], lr: float,
                 id_optimizer: str = "adam", id_lr: float | None = None) -> None:
        self.id_optimizer = id_optimizer
        self.parts = [torch.optim.Adam(dense, lr=lr),
                      id_table_optimizer(id_optimizer, sparse, id_lr or lr)]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for part in self.parts:
            part.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for part in self.parts:
            part.step()

    def state_dict(self) -> dict:
        return {"parts": [part.state_dict() for part in self.parts],
                "id_optimizer": self.id_optimizer}

    def load_state_dict(self, state: dict) -> None:
        check_id_optimizer(state.get("id_optimizer", "adam"), self.id_optimizer)
        for part, saved in zip(self.parts, state["parts"], strict=True):
            part.load_state_dict(saved)


def check_id_optimizer(saved: str, current: str) -> None:
    """A checkpoint's ID-table state resumes only under the optimizer that wrote it."""
    if saved != current:
        raise ConfigError(f"the checkpoint's ID tables were trained with {saved}, this run "
                          f"steps them with {current}: resume with --id-optimizer {saved}")


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
