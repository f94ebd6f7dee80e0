"""Unintended tasks and the consumer models trained on ver-0 embeddings (method.md).

Five binary tasks on the period (t_k, t_{k+1}] of a `PeriodSplit`:

1. ``user-activity``: does a user existing at t_k interact in the period?
2. ``user-positive-activity``: does that user give a rating >= 4 in the period?
3. ``item-rating-avg``: is the item's average rating above the t_0 median (items with > 10 ratings)?
4. ``item-rating-std``: is the item's rating standard deviation above 1 (same items)?
5. ``edge-rating``: is the period's edge rated >= 4? (input: user and item embeddings joined)

A consumer is a 1-hidden-layer MLP (ReLU after the hidden layer, unlike the reference's missing
activation) trained on ver-0 embeddings with validation-based early stopping on ROC-AUC.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass

import numpy as np
import polars as pl
import torch
from torch import nn

from bc_ray.core.evaluation import roc_auc
from bc_ray.core.splits import PeriodSplit
from bc_ray.exceptions import ConfigError

logger = logging.getLogger(__name__)

TASKS = ("user-activity", "user-positive-activity", "item-rating-avg", "item-rating-std",
         "edge-rating")
MIN_RATINGS = 10


@dataclass
class Examples:
    entity: str  # user | item | edge
    rows: torch.Tensor  # entity indices, or (2, n) user/item indices for edges
    labels: torch.Tensor

    def inputs(self, z_user: torch.Tensor, z_item: torch.Tensor) -> torch.Tensor:
        if self.entity == "user":
            return z_user[self.rows]
        if self.entity == "item":
            return z_item[self.rows]
        return torch.cat([z_user[self.rows[0]], z_item[self.rows[1]]], dim=1)


def _item_stats(edges: pl.DataFrame) -> pl.DataFrame:
    return (edges.group_by("item_idx")
            .agg(count=pl.len(), mean=pl.col("rating").mean(), std=pl.col("rating").std())
            .filter(pl.col("count") > MIN_RATINGS).sort("item_idx"))


def item_rating_median(split: PeriodSplit) -> float:
    """The threshold of `item-rating-avg`, fixed at t_0 from the training edges."""
    return float(_item_stats(split.train_edges)["mean"].median())


def examples(task: str, split: PeriodSplit, phase: str, median: float) -> Examples:
    """`phase` "train" uses the item stats and edges of the split's graph: every edge up to t_k
    and, as the paper's split has it, the period's new users' edges but their last (consumers
    train on period 0 and are scored on later periods, which this never reaches); "eval" uses
    the period (t_k, t_{k+1}]."""
    period = pl.concat([split.train_edges.filter(pl.col("t") > split.start), split.eval_edges])
    if task in ("user-activity", "user-positive-activity"):
        users = split.graph.user_first_t <= split.start
        rows = torch.nonzero(users).flatten()
        active = period if task == "user-activity" else period.filter(pl.col("rating") >= 4)
        hit = torch.zeros(split.graph.num_users, dtype=torch.bool)
        hit[torch.from_numpy(active["user_idx"].unique().to_numpy().astype(np.int64))] = True
        return Examples("user", rows, hit[rows].float())
    if task in ("item-rating-avg", "item-rating-std"):
        known = split.train_edges if phase == "train" else pl.concat(
            [split.train_edges, split.eval_edges])
        stats = _item_stats(known)
        values = stats["mean"] > median if task == "item-rating-avg" else stats["std"] > 1.0
        return Examples("item", torch.from_numpy(stats["item_idx"].to_numpy().astype(np.int64)),
                        torch.from_numpy(values.to_numpy().astype(np.float32)))
    if task == "edge-rating":
        edges = split.train_edges if phase == "train" else period
        rows = torch.from_numpy(np.stack([edges["user_idx"].to_numpy(),
                                          edges["item_idx"].to_numpy()]).astype(np.int64))
        return Examples("edge", rows, torch.from_numpy(
            (edges["rating"].to_numpy() >= 4).astype(np.float32)))
    raise ConfigError(f"unknown task {task!r}")


def interaction_counts(split: PeriodSplit) -> tuple[torch.Tensor, torch.Tensor]:
    """Per user and item, log(1 + its interactions) in the split's training edges: the raw count
    a consumer could read without any embedding (no ratings: the embeddings never see them).
    Consumers trained on it show whether a task carries signal at all, a check for data sets
    without metadata."""
    edges = split.train_edges

    def counts(column: str, size: int) -> torch.Tensor:
        degree = np.bincount(edges[column].to_numpy(), minlength=size)
        return torch.from_numpy(np.log1p(degree).astype(np.float32))[:, None]

    return counts("user_idx", split.graph.num_users), counts("item_idx", split.graph.num_items)


@dataclass(frozen=True)
class ConsumerConfig:
    hidden_dims: tuple[int, ...] = (128,)
    dropouts: tuple[float, ...] = (0.25,)
    epochs: int = 100
    patience: int = 15
    batch_size: int = 2048
    lr: float = 1e-3
    seed: int = 0


class ConsumerMLP(nn.Module):
    def __init__(self, in_dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)

    @torch.no_grad()
    def auc(self, x: torch.Tensor, labels: torch.Tensor) -> float:
        self.eval()
        return roc_auc(self(x).numpy(), labels.numpy())


def _train_one(x, y, x_val, y_val, hidden, dropout, config: ConsumerConfig):
    torch.manual_seed(config.seed)
    model = ConsumerMLP(x.shape[1], hidden, dropout)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    loss_fn = nn.BCEWithLogitsLoss()
    generator = torch.Generator().manual_seed(config.seed)
    best, best_state, waited = -1.0, None, 0
    # A validation set of one class has no AUC (a small task's random hold-out can be one).
    signal = torch.unique(y_val).numel() == 2
    for _ in range(config.epochs):
        model.train()
        order = torch.randperm(x.shape[0], generator=generator)
        for start in range(0, order.numel(), config.batch_size):
            rows = order[start:start + config.batch_size]
            loss = loss_fn(model(x[rows]), y[rows])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        if not signal:  # nothing to stop on: every epoch runs, the last state is kept
            continue
        score = model.auc(x_val, y_val)
        if score > best:
            best, best_state, waited = score, copy.deepcopy(model.state_dict()), 0
        else:
            waited += 1
            if waited >= config.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return model, best if signal else float("nan")


def train_consumer(x: torch.Tensor, y: torch.Tensor, x_val: torch.Tensor, y_val: torch.Tensor,
                   config: ConsumerConfig = ConsumerConfig()) -> ConsumerMLP:
    """Grid over hidden sizes and dropouts; the best validation AUC wins. A validation set of
    one class cannot choose: the grid's first setting, trained for every epoch, is kept (with a
    warning) rather than failing the caller."""
    best_model, best_score = None, -1.0
    for hidden in config.hidden_dims:
        for dropout in config.dropouts:
            model, score = _train_one(x, y, x_val, y_val, hidden, dropout, config)
            if math.isnan(score):
                logger.warning("a consumer's validation set holds one class: no early "
                               "stopping or grid choice, its first setting trained %d epochs",
                               config.epochs)
                return model
            if score > best_score:
                best_model, best_score = model, score
    return best_model
