"""The training loop of one version, for any model family: task loss + lambda * alignment, with
model selection.

The family's `TrainingTask` batches the data and computes the task loss of a batch (GraphSAGE:
BPR on triples; the sequence family: next-item prediction); this loop adds the alignment of B_k
applied to the embeddings the step computed, steps the optimiser, evaluates and selects.
Data-parallel workers (Ray Train) build the same trainer with their `rank` and `world_size`.

Model selection keeps the state with the best validation Recall@50 whose alignment error is within
`align_tolerance` of the best alignment seen after warm-up (the reference ignored alignment here).
"""

from __future__ import annotations

import copy
import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from bc_ray.core.embedded import check_step, spec_dim
from bc_ray.core.family import EmbeddingModule, TrainingTask
from bc_ray.core.graph import GraphTensors
from bc_ray.core.losses import alignment_multi, alignment_single
from bc_ray.core.registry import family_of
from bc_ray.core.row_shards import ShardedRows, owners_rank
from bc_ray.core.sparse_rows import CombinedOptimizer, average_sparse_gradients
from bc_ray.core.train_config import TrainConfig
from bc_ray.core.transforms import BackwardTransform
from bc_ray.exceptions import TrainingError

FINITE_CHECK_ROWS = 1 << 16  # targets checked a chunk of rows at a time


@dataclass
class Alignment:
    """Joint alignment to the previous version: B_k (trained with M_k unless it has no
    parameters), targets z_{k-1} for every node (users then items) with a mask of the nodes that
    have one, and the multi-step amplifiers W_{k-1}^j (None: single-step loss)."""

    transform: BackwardTransform
    targets: torch.Tensor
    mask: torch.Tensor
    amplifiers: list[torch.Tensor] | None = None

    def __post_init__(self) -> None:
        if not torch.isfinite(self.targets[self.mask]).all():
            raise TrainingError("alignment targets contain NaN or inf")

    def to(self, device: torch.device) -> Alignment:
        amplifiers = None if self.amplifiers is None else [a.to(device) for a in self.amplifiers]
        return Alignment(self.transform.to(device), self.targets.to(device), self.mask.to(device),
                         amplifiers)

    def targets_of(self, nodes: torch.Tensor) -> torch.Tensor:
        return self.targets[nodes]

    def loss(self, predicted: torch.Tensor, target: torch.Tensor,
             weights: torch.Tensor | None = None) -> torch.Tensor:
        if self.amplifiers is None:
            return alignment_single(predicted, target, weights)
        return alignment_multi(predicted, target, self.amplifiers, weights)


@dataclass
class ShardedAlignment(Alignment):
    """Alignment whose targets are sharded across the training workers (`ShardedRows`: each
    holds its own nodes' z_{k-1}); the mask stays whole, a byte per node. `targets_of` is a
    collective, which every worker reaches once per step."""

    targets: ShardedRows

    def __post_init__(self) -> None:
        owners = self.targets.owners
        own = self.mask[owners.nodes_of(owners_rank())]
        rows = self.targets.rows
        for first in range(0, rows.shape[0], FINITE_CHECK_ROWS):  # no copy of every row
            chunk = slice(first, first + FINITE_CHECK_ROWS)
            if not torch.isfinite(rows[chunk][own[chunk]]).all():
                raise TrainingError("alignment targets contain NaN or inf")

    def to(self, device: torch.device) -> ShardedAlignment:
        if torch.device(device).type != "cpu":
            raise TrainingError("sharded alignment targets are exchanged on the CPU (gloo)")
        return self

    def targets_of(self, nodes: torch.Tensor) -> torch.Tensor:
        return self.targets.gather(nodes)


class JointModule(nn.Module):
    """M_k and (when aligned jointly) B_k in one module, which is what DDP wraps: a step's
    forward runs the task on M_k and B_k on the embeddings of the step's nodes that have an
    alignment target."""

    def __init__(self, model: EmbeddingModule, transform: BackwardTransform | None,
                 task: TrainingTask | None = None) -> None:
        super().__init__()
        self.model = model
        self.transform = transform
        self.task = task
        self._stepped = False  # the first step's nodes are checked for order

    def forward(self, batch, mask: torch.Tensor | None = None):
        step = self.task.step(self.model, batch)
        check_step(step, spec_dim(self.model), type(self.task).__qualname__, not self._stepped)
        self._stepped = True
        if self.transform is None or mask is None:
            return step.loss, step.nodes, None, None, None, step.parts
        rows = mask[step.nodes]
        weights = None if step.align_weights is None else step.align_weights[rows]
        return (step.loss, step.nodes, rows, self.transform(step.z[rows]), weights,
                step.parts)


Evaluator = Callable[[EmbeddingModule, BackwardTransform | None], dict]


@dataclass
class TrainResult:
    model: EmbeddingModule
    transform: BackwardTransform | None
    history: list[dict] = field(default_factory=list)
    selected_epoch: int = 0
    selected_metrics: dict = field(default_factory=dict)
    stopped_epoch: int = 0  # the last epoch trained (early stopping ends before `epochs`)


class VersionTrainer:
    def __init__(self, model: EmbeddingModule, graph: GraphTensors, config: TrainConfig,
                 alignment: Alignment | None = None, evaluator: Evaluator | None = None, *,
                 rank: int = 0, world_size: int = 1, item_pool: torch.Tensor | None = None,
                 device: torch.device | str = "cpu", family=None,
                 task: TrainingTask | None = None) -> None:
        """`family` (default: the one the model's spec names) supplies the training task,
        unless `task` is given (sharded training builds its own: `ShardedLinkPredictionTask`)."""
        if task is None and graph.num_edges == 0:
            raise TrainingError("the training graph has no edges")
        if task is not None and torch.device(device).type != "cpu":
            raise TrainingError("a task built outside the trainer (sharded ID rows) trains on "
                                "the CPU: its rows are exchanged over gloo")
        self.device = torch.device(device)
        self.config, self.evaluator = config, evaluator
        self.alignment = alignment if alignment is None else alignment.to(self.device)
        self.rank, self.world_size = rank, world_size
        model.to(self.device)
        if task is None:
            task = (family or family_of(model.spec)).task(
                model, graph, config, rank=rank, world_size=world_size, item_pool=item_pool,
                device=self.device)
        self.task = task
        self.joint = JointModule(model, self.alignment.transform if self.alignment else None,
                                 self.task)
        self.module: nn.Module = self.joint
        self.sparse_parameters = list(self.task.sparse_parameters)
        if self.sparse_parameters:
            dense = [p for p in self.joint.parameters()
                     if all(p is not q for q in self.sparse_parameters)]
            self.optimizer = CombinedOptimizer(dense, self.sparse_parameters, config.lr,
                                               config.id_optimizer, config.id_table_lr)
        else:
            self.optimizer = torch.optim.Adam(self.joint.parameters(), lr=config.lr)
        self.history: list[dict] = []
        self._best_state: dict | None = None
        self._best_rows = None  # a sharded task's own ID rows at the selected epoch
        self._best = {"epoch": 0, "recall": -math.inf, "metrics": {}}
        self._min_align = math.inf
        self._stale_evaluations = 0
        self.steps_done = 0  # optimiser steps so far (the step budget counts them)

    @property
    def model(self) -> EmbeddingModule:
        return self.joint.model

    def sparse_parameter_names(self) -> list[str]:
        """Names (in `joint`) of the parameters DDP must leave to `average_sparse_gradients`."""
        return [name for name, p in self.joint.named_parameters()
                if any(p is q for q in self.sparse_parameters)]

    # -- one epoch -------------------------------------------------------------------------
    def run_epoch(self, epoch: int, progress: Callable[[dict], None] | None = None,
                  progress_every_s: float = 30.0) -> dict:
        """One pass over this rank's shard; `progress` gets {epoch, step, steps, edges_per_s,
        eta_s} at most every `progress_every_s` (long sampled epochs run for minutes)."""
        started = last_report = time.perf_counter()
        self.module.train()
        batches = self.task.epoch(epoch)
        totals: dict[str, float] = {"loss": 0.0, "align": 0.0}
        steps = examples = 0
        total_steps = self.config.steps_in_epoch(len(batches), self.world_size, self.steps_done)
        for batch in itertools.islice(batches, total_steps):
            for key, value in self.step(batch).items():
                totals[key] = totals.get(key, 0.0) + value
            steps += 1
            examples += self.task.examples(batch)
            now = time.perf_counter()
            if progress is not None and now - last_report >= progress_every_s:
                last_report = now
                progress({"epoch": epoch, "step": steps, "steps": total_steps,
                          "edges_per_s": examples / (now - started),
                          "eta_s": (total_steps - steps) * (now - started) / steps})
        self.steps_done += steps
        stats = {key: value / max(steps, 1) for key, value in totals.items()}
        stats.update(epoch=epoch, steps=steps, edges=examples,
                     seconds=time.perf_counter() - started)
        return stats

    def step(self, batch) -> dict:
        mask = self.alignment.mask if self.alignment else None
        loss, nodes, rows, predicted, weights, parts = self.module(batch, mask)
        align = torch.zeros(())
        if self.alignment is not None:
            align = self.alignment.loss(predicted, self.alignment.targets_of(nodes[rows]), weights)
            loss = loss + self.config.lam * align
        if not torch.isfinite(loss):
            raise TrainingError(f"the loss diverged ({float(loss.detach())}); lower the learning "
                                "rate or lambda, or check the inputs for NaN")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        after_backward = getattr(self.task, "after_backward", None)
        if after_backward is not None:  # rows sharded across workers go to their owners
            after_backward()
        if self.sparse_parameters and self.world_size > 1:
            average_sparse_gradients(self.sparse_parameters)
        self.optimizer.step()
        return {"loss": loss.item(), **{k: float(v) for k, v in parts.items()},
                "align": align.item()}

    # -- evaluation and selection ---------------------------------------------------------------
    @property
    def budget_spent(self) -> bool:
        """The step budget (`max_steps`) is used up: the epoch just run was the last."""
        return 0 < self.config.max_steps <= self.steps_done

    def is_last(self, epoch: int) -> bool:
        return epoch == self.config.epochs or self.budget_spent

    def should_evaluate(self, epoch: int) -> bool:
        return self.evaluator is not None and (
            epoch % self.config.eval_every == 0 or self.is_last(epoch))

    def evaluate(self, epoch: int) -> dict:
        metrics = self.evaluator(self.model, self.joint.transform)
        if self.select(epoch, metrics):
            self._stale_evaluations = 0
        elif epoch > self.config.warmup_epochs:
            self._stale_evaluations += 1
        return metrics

    @property
    def converged(self) -> bool:
        """Validation stopped improving for `patience` evaluations after warm-up."""
        return self.config.patience > 0 and self._stale_evaluations >= self.config.patience

    def select(self, epoch: int, metrics: dict) -> bool:
        """Keep this state if it is the best so far by the rule in the module docstring."""
        aligned = self.alignment is not None and "align_error" in metrics
        if aligned:
            if epoch <= self.config.warmup_epochs and not self.is_last(epoch):
                return False
            self._min_align = min(self._min_align, metrics["align_error"])
            if metrics["align_error"] > (1.0 + self.config.align_tolerance) * self._min_align:
                return False
        if metrics["recall"] <= self._best["recall"]:
            return False
        self._best = {"epoch": epoch, "recall": metrics["recall"], "metrics": dict(metrics)}
        if self.is_last(epoch):  # nothing trains after it: the live state is the one selected,
            self._best_state = self._best_rows = None  # so no copy of the tables beside it
            return True
        self._best_state = copy.deepcopy(self.joint.state_dict())
        if self._rows_outside:
            self._best_rows = self.task.rows_state()
        return True

    @property
    def _rows_outside(self) -> bool:
        """The task keeps trainable rows outside `joint` (sharded ID rows)."""
        return hasattr(self.task, "rows_state")

    def fit(self, on_epoch: Callable[[dict], None] | None = None) -> TrainResult:
        for epoch in range(1, self.config.epochs + 1):
            stats = self.run_epoch(epoch)
            if self.should_evaluate(epoch):
                stats.update(self.evaluate(epoch))
            self.history.append(stats)
            if on_epoch is not None:
                on_epoch(stats)
            if self.converged or self.budget_spent:
                break
        return self.result()

    def result(self) -> TrainResult:
        if self._best_state is not None:
            self.joint.load_state_dict(self._best_state)
            if self._best_rows is not None:
                self.task.load_rows_state(self._best_rows)
        self.model.eval()
        return TrainResult(model=self.model, transform=self.joint.transform, history=self.history,
                           selected_epoch=self._best["epoch"] or (
                               self.history[-1]["epoch"] if self.history else self.config.epochs),
                           selected_metrics=self._best["metrics"],
                           stopped_epoch=self.history[-1]["epoch"] if self.history else 0)

    def state(self) -> dict:
        """Everything needed to resume (for checkpoints). `best_state` is None while the live
        state is the selected one (the last epoch selected: nothing trains after it)."""
        state = {"joint": self.joint.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "best_state": self._best_state, "best": self._best, "min_align": self._min_align,
                 "history": self.history, "stale_evaluations": self._stale_evaluations,
                 "steps_done": self.steps_done}
        if self._rows_outside:  # this worker's own: each worker writes its state
            state.update(rows=self.task.ids.checkpoint(), best_rows=self._best_rows)
        return state

    def load_state(self, state: dict) -> None:
        self.joint.load_state_dict(state["joint"])
        self.optimizer.load_state_dict(state["optimizer"])
        self._best_state, self._best = state["best_state"], state["best"]
        self._min_align, self.history = state["min_align"], state["history"]
        self._stale_evaluations = state.get("stale_evaluations", 0)
        self.steps_done = state.get("steps_done", 0)
        if self._rows_outside:
            self.task.ids.restore(state["rows"])
            self._best_rows = state["best_rows"]
