"""The sequence family's training task: next-item prediction with a sampled softmax.

Each user's history is cut into windows of at most `max_len` items, the last one ending at the
history's end and each earlier one ending where the next begins. A window [user, i_a .. i_b]
scores, at position t >= 1 (after i_a .. i_{a+t-1}), the item that followed, i_{a+t}; position 0
(the user token alone) scores i_a only in the user's first window. So every interaction is a
target exactly once per epoch, the last position of a window scores the first item of the next,
and the last position of the final window, which predicts the future, is z(u) itself: the step
returns it for the alignment loss. With `predict_next` = n a position also scores the n - 1
items after its next one (the multi-token objective; one head, so z(u) is the vector trained to
score the user's next n interactions).

Loss per target: cross-entropy of the target against `negatives` items drawn uniformly per batch
from the item pool (shared by all targets of the batch; a negative equal to the target is
masked), logits <q, z(i)> / temperature; plus `reg` times the squared norms of the scored pairs,
as GraphSAGE's BPR regulariser.

The alignment of B_k sees the step's items and the users whose last window it holds, weighted
so users and items count at their shares of all entities (`align_weights`): a step holds every
item its windows touch but a user only once an epoch, and unweighted, B_k learned the items and
hardly the users (consumers' user tasks fell to chance while the item tasks held).

Data-parallel ranks shuffle the same windows with the shared seed and each takes an equal
contiguous share, so all ranks take the same number of steps. `batch_size` counts predicted
interactions: a step holds batch_size // max_len windows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bc_ray.core.family import TaskStep
from bc_ray.core.graph import GraphTensors
from bc_ray.core.sparse_rows import row_sparse_tables
from bc_ray.core.train_config import TrainConfig
from bc_ray.exceptions import ConfigError, TrainingError
from bc_ray.models.sequence.history import Entities, Histories, user_histories
from bc_ray.models.sequence.model import SequenceModel


@dataclass(frozen=True)
class Windows:
    """Training windows: user, history slice [start, end) (global offsets into the items)."""

    user: np.ndarray
    start: np.ndarray
    end: np.ndarray

    def __len__(self) -> int:
        return int(self.user.size)

    def take(self, index: np.ndarray) -> Windows:
        return Windows(self.user[index], self.start[index], self.end[index])


def history_windows(histories: Histories, max_len: int) -> Windows:
    """Windows of at most `max_len` items, the last ending at each history's end (see above)."""
    lengths = histories.lengths
    count = -(-lengths // max_len)  # ceil; 0 for users without interactions
    user = np.repeat(np.arange(lengths.size), count)
    back = np.arange(int(count.sum())) - np.repeat(np.cumsum(count) - count, count)
    end = histories.ptr[user + 1] - back * max_len
    return Windows(user, np.maximum(histories.ptr[user], end - max_len), end)


@dataclass
class WindowBatch:
    """One step's windows as tensors. Items are local rows of `item_ids` (sorted, unique)."""

    users: torch.Tensor  # (B,) user idx
    lengths: torch.Tensor  # (B,) items in each window (its last position is `lengths`)
    items: torch.Tensor  # (B, T - 1) local item rows, padded
    targets: torch.Tensor  # (B, T, n) local item row scored at position t, offset j; -1: none
    negatives: torch.Tensor  # (K,) local item rows
    item_ids: torch.Tensor  # (N,) item idx
    final: torch.Tensor  # (B,) the window ends at the history's end

    def to(self, device: torch.device) -> WindowBatch:
        return WindowBatch(*(getattr(self, f).to(device) for f in self.__dataclass_fields__))


def window_batch(histories: Histories, windows: Windows, predict_next: int,
                 negatives: np.ndarray) -> WindowBatch:
    """The tensors of `windows`, scoring the targets described in the module docstring."""
    lengths = windows.end - windows.start
    width = int(lengths.max())
    offset = np.arange(width)[None, :]
    inside = offset < lengths[:, None]
    items = histories.items[np.where(inside, windows.start[:, None] + offset, 0)]
    # Position t (of 0..length: padding beyond) scores history entries start + t + j, j < n,
    # that exist; position 0 only in a user's first window.
    position = np.arange(width + 1)[None, :, None]
    entry = windows.start[:, None, None] + position + np.arange(predict_next)[None, None, :]
    history_end = histories.ptr[windows.user + 1]
    valid = (entry < history_end[:, None, None]) & (position <= lengths[:, None, None])
    first = windows.start == histories.ptr[windows.user]
    valid[~first, 0, :] = False
    targets = np.where(valid, histories.items[np.where(valid, entry, 0)], -1)
    item_ids, local = np.unique(np.concatenate([items[inside], targets[valid], negatives]),
                                return_inverse=True)
    local_items = np.zeros_like(items)
    local_items[inside] = local[: int(inside.sum())]
    local_targets = np.full_like(targets, -1)
    local_targets[valid] = local[int(inside.sum()): int(inside.sum()) + int(valid.sum())]
    return WindowBatch(
        *(torch.from_numpy(a) for a in (
            windows.user, lengths, local_items, local_targets,
            local[local.size - negatives.size:], item_ids, windows.end == history_end)))


class WindowBatches(Sequence):
    """One rank's windows of an epoch, cut into steps, each with its own negatives."""

    def __init__(self, task: NextItemTask, windows: Windows, epoch: int) -> None:
        self.task, self.windows, self.epoch = task, windows, epoch
        self.per_step = max(1, task.config.batch_size // task.spec.max_len)

    def __len__(self) -> int:
        return math.ceil(len(self.windows) / self.per_step)

    def __getitem__(self, index: int) -> WindowBatch:
        if not 0 <= index < len(self):
            raise IndexError(index)
        task = self.task
        rng = np.random.default_rng([task.config.seed, self.epoch, task.rank, index])
        negatives = task.item_pool[rng.integers(0, task.item_pool.size, task.spec.negatives)]
        part = self.windows.take(np.arange(index * self.per_step,
                                           min((index + 1) * self.per_step, len(self.windows))))
        return window_batch(task.histories, part, task.spec.predict_next, negatives)


class NextItemTask:
    def __init__(self, model: SequenceModel, graph: GraphTensors, config: TrainConfig, *,
                 rank: int = 0, world_size: int = 1, item_pool: torch.Tensor | None = None,
                 device: torch.device | None = None) -> None:
        if config.negatives != "uniform":
            raise ConfigError(f"the sequence family samples its softmax negatives uniformly; "
                              f"negatives {config.negatives!r} is for GraphSAGE's BPR triples")
        self.device = torch.device(device or "cpu")
        self.spec, self.config = model.spec, config
        self.rank, self.world_size = rank, world_size
        self.num_users, self.num_items = graph.num_users, graph.num_items
        graph = graph if self.device.type == "cpu" else graph.to(self.device)
        self.users, self.items = Entities.of(graph, "user"), Entities.of(graph, "item")
        self.histories = user_histories(graph)
        self.windows = history_windows(self.histories, self.spec.max_len)
        pool = np.arange(graph.num_items) if item_pool is None else item_pool.cpu().numpy()
        self.item_pool = np.asarray(pool, dtype=np.int64)
        if self.item_pool.size == 0:
            raise TrainingError("the item pool to sample negatives from is empty")
        row_sparse = graph.num_nodes > config.sparse_ids_min_nodes
        self.sparse_parameters = row_sparse_tables(model, row_sparse, config.id_optimizer)

    def epoch_windows(self, epoch: int) -> Windows:
        order = np.random.default_rng(self.config.seed * 1_000_003 + epoch).permutation(
            len(self.windows))
        share = order.size // self.world_size
        if share == 0:
            raise TrainingError(f"{order.size} training windows cannot be shared by "
                                f"{self.world_size} workers")
        return self.windows.take(order[self.rank * share:(self.rank + 1) * share])

    def epoch(self, epoch: int) -> WindowBatches:
        return WindowBatches(self, self.epoch_windows(epoch), epoch)

    def examples(self, batch: WindowBatch) -> int:
        return int((batch.targets[..., 0] >= 0).sum())

    def step(self, model: nn.Module, batch: WindowBatch) -> TaskStep:
        batch = batch.to(self.device)
        queries, z_items = model(self.users, self.items, batch.users, batch.item_ids,
                                 batch.items)
        softmax, reg = self.loss(queries, z_items, batch)
        final = torch.nonzero(batch.final).flatten()
        order = torch.argsort(batch.users[final])  # node ids must be sorted
        final = final[order]
        z_users = queries[final, batch.lengths[final]]
        nodes = torch.cat([batch.users[final], batch.item_ids + self.num_users])
        return TaskStep(softmax + self.config.reg * reg, nodes, torch.cat([z_users, z_items]),
                        parts={"softmax": softmax.detach()},
                        align_weights=self.align_weights(final.numel(), batch.item_ids.numel()))

    def align_weights(self, users: int, items: int) -> torch.Tensor:
        """Users and items in the step's alignment at their shares of all entities: a step
        holds every item its windows touch but only the users whose history ends in it (one
        step per user and epoch), so unweighted, users would hardly be aligned at all. A step
        with few users weighs each heavily; over an epoch every user counts once, as each item
        counts once per step: the epoch's alignment is the mean over all entities."""
        user_share = self.num_users / (self.num_users + self.num_items)
        return torch.cat([torch.full((users,), user_share / max(users, 1), device=self.device),
                          torch.full((items,), (1.0 - user_share) / max(items, 1),
                                     device=self.device)])

    def loss(self, queries: torch.Tensor, z_items: torch.Tensor,
             batch: WindowBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(sampled softmax, regulariser) over every scored target of the batch."""
        if not bool((batch.targets >= 0).any()):  # max_len 1: final windows score nothing
            nothing = queries.sum() * 0.0 + z_items.sum() * 0.0  # DDP: every weight used
            return nothing, nothing
        row, position, _ = torch.nonzero(batch.targets >= 0, as_tuple=True)
        target = batch.targets[batch.targets >= 0]
        query = queries[row, position]
        positive = (query * z_items[target]).sum(-1, keepdim=True)
        negative = query @ z_items[batch.negatives].T
        negative = negative.masked_fill(batch.negatives[None, :] == target[:, None], -math.inf)
        logits = torch.cat([positive, negative], dim=1) / self.spec.temperature
        softmax = F.cross_entropy(logits, torch.zeros_like(target))
        reg = 0.5 * (query.pow(2).sum(-1) + z_items[target].pow(2).sum(-1)).mean()
        return softmax, reg
