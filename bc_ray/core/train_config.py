"""The settings of one version's training loop (`core/trainer.py`), apart from the loop: they
import no torch, so the command line reads their defaults at start-up."""

from __future__ import annotations

from dataclasses import dataclass

from bc_ray.exceptions import ConfigError

TRAIN_MODES = ("auto", "full", "sampled")
# What steps the row-sparse and sharded ID tables: lazy Adam (2 d floats of state per row) or
# row-wise Adagrad (one float per row: `sparse_rows.RowwiseAdagrad`).
ID_OPTIMIZERS = ("adam", "rowwise_adagrad")
# Row-wise Adagrad's steps shrink as a row's squared gradients add up, so at Adam's 1e-3 it
# trains too slowly (0.46x Recall@50); at 0.01 it matches Adam at 1e-3 (RESULTS §10, "The ID
# rows' optimizer": benchmarks/bench_id_optimizer.py).
ROWWISE_ADAGRAD_LR = 0.01


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 500
    batch_size: int = 2048  # examples per step: BPR triples (graphsage), targets (sequence)
    lr: float = 1e-3
    reg: float = 1e-2
    lam: float = 16.0
    # The BPR sampler and graph modes below are GraphSAGE's (another family may refuse or
    # ignore them; its own objective settings live in its spec).
    negatives: str = "uniform"
    user_uniform: bool = True
    mode: str = "auto"
    fanout: int = 10
    # `auto` switches to sampled mini-batches above this many nodes: where the two modes' edges/s
    # cross (batch 2048, fanout 10, 2 layers, 64 wide: benchmarks/bench_scale.py --crossover).
    full_graph_max_nodes: int = 10_000
    # Sampled mode trains the ID tables row-sparse (sparse_rows.py) above this many nodes; below
    # it the batch touches most rows and dense Adam is faster (measured crossover ~100k nodes).
    sparse_ids_min_nodes: int = 100_000
    # How those row-sparse (and sharded) ID tables are stepped, and at what learning rate (0:
    # `lr` for Adam, ROWWISE_ADAGRAD_LR for row-wise Adagrad); dense tables train with Adam.
    id_optimizer: str = "adam"
    id_lr: float = 0.0
    eval_every: int = 10
    warmup_epochs: int = 50
    align_tolerance: float = 0.1
    seed: int = 0
    posthoc_epochs: int = 200
    warm_start: str = "off"  # off | mean | metadata (see warmstart.py)
    # Early stopping: after warm-up, stop once this many evaluations in a row selected no new
    # state (0: train every epoch). `epochs` stays the safety net.
    patience: int = 0
    # A step budget, so a bump's time is bounded whatever the graph's size (0: none). max_steps:
    # optimiser steps in all (training ends within the epoch that spends them); edges_per_epoch:
    # examples per epoch over all workers (each epoch takes the first of its shuffled shard).
    max_steps: int = 0
    edges_per_epoch: int = 0

    def __post_init__(self) -> None:
        if self.warm_start not in ("off", "mean", "metadata"):
            raise ConfigError(f"warm start {self.warm_start!r} is not one of off, mean, metadata")
        if self.id_optimizer not in ID_OPTIMIZERS:
            raise ConfigError(f"ID optimizer {self.id_optimizer!r} is not one of "
                              f"{', '.join(ID_OPTIMIZERS)}")
        if self.mode not in TRAIN_MODES:
            raise ConfigError(f"training mode {self.mode!r} is not one of {TRAIN_MODES}")
        for name in ("epochs", "batch_size", "eval_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"training {name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.lam < 0 or self.reg < 0 or self.id_lr < 0:
            raise ConfigError("training lr must be > 0, and id_lr, lam and reg >= 0")
        for name in ("patience", "max_steps", "edges_per_epoch"):
            if getattr(self, name) < 0:
                raise ConfigError(f"training {name} must be >= 0, got {getattr(self, name)}")

    @property
    def id_table_lr(self) -> float:
        """The learning rate of the row-sparse and sharded ID tables."""
        if self.id_lr:
            return self.id_lr
        return ROWWISE_ADAGRAD_LR if self.id_optimizer == "rowwise_adagrad" else self.lr

    def steps_in_epoch(self, available: int, world_size: int, steps_done: int) -> int:
        """Steps of the next epoch under the budget: at most `available` (the shard's), the
        share of `edges_per_epoch`, and what remains of `max_steps` (the same on every rank)."""
        steps = available
        if self.edges_per_epoch:
            steps = min(steps, max(1, -(-self.edges_per_epoch // (self.batch_size * world_size))))
        if self.max_steps:
            steps = min(steps, max(0, self.max_steps - steps_done))
        return steps
