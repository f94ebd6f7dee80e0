"""Training one version M_k (and B_k) by a method: the single path every method strategy takes.

Used by the paper benchmark (in-process) and by the Ray Train job (one copy per worker).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from bc_ray.chain import Affine
from bc_ray.core.embedded import embedded
from bc_ray.core.evaluation import alignment_error, recall_at_k
from bc_ray.core.family import EmbeddingModule, ModelFamily, ModelSpec, Vocabularies
from bc_ray.core.graph import GraphTensors
from bc_ray.core.methods import Method
from bc_ray.core.posthoc import fit_posthoc
from bc_ray.core.registry import family_of
from bc_ray.core.splits import PeriodSplit
from bc_ray.core.train_config import TrainConfig
from bc_ray.core.trainer import Alignment, Evaluator, TrainResult, VersionTrainer
from bc_ray.core.transforms import BackwardTransform, IdentityTransform, make_transform
from bc_ray.core.warmstart import truncation_start
from bc_ray.exceptions import ConfigError, TrainingError


@dataclass
class StoredTargets:
    """Ver-(k-1) embeddings read from the store and joined by external id: rows of entities
    without a ver-(k-1) row are masked out of the alignment loss."""

    user: torch.Tensor
    item: torch.Tensor
    user_mask: torch.Tensor
    item_mask: torch.Tensor


@dataclass(frozen=True)
class TablesOnly:
    """The spec of a previous version known only by its tables (embeddings made elsewhere and
    registered with `bc-ray publish`): its dimension, and no model to run or copy."""

    family: ClassVar[str] = "external"
    dim: int

    @property
    def output_dim(self) -> int:
        return self.dim

    def to_dict(self) -> dict:
        return {"dim": self.dim}


@dataclass
class PreviousVersion:
    """What training version k needs of version k-1: its spec, the frozen model (or its stored
    embeddings), and W_{k-1}^j for every older version j of the lineage (the multi-step
    amplifiers; the last is the identity)."""

    version: int
    spec: ModelSpec
    amplifiers: list[torch.Tensor]
    model: EmbeddingModule | None = None
    stored: StoredTargets | None = None

    @property
    def dim(self) -> int:
        return self.spec.output_dim

    def targets(self, graph: GraphTensors) -> tuple[torch.Tensor, torch.Tensor]:
        """z_{k-1} for every node of `graph` (users then items) and the mask of valid rows."""
        if self.stored is not None:
            return (torch.cat([self.stored.user, self.stored.item]),
                    torch.cat([self.stored.user_mask, self.stored.item_mask]))
        if self.model is None:
            raise TrainingError(f"version {self.version} has neither a model nor stored "
                                "embeddings to align to")
        z_user, z_item = embedded(self.model, graph)
        targets = torch.cat([z_user, z_item])
        return targets, torch.ones(targets.shape[0], dtype=torch.bool, device=targets.device)


@dataclass
class VersionOutcome:
    model: EmbeddingModule
    transform: Affine | None  # B_k as (W, b); None for version 0
    result: TrainResult | None


def split_evaluator(split: PeriodSplit, targets: tuple[torch.Tensor, torch.Tensor] | None,
                    users: torch.Tensor | None = None, k: int = 50) -> Evaluator:
    """Validation Recall@k on the split's held-out edges, plus the single-step alignment error
    of B_k(z_k) against z_{k-1} when there are targets."""
    eval_user, eval_item = split.eval_pairs
    known_user, known_item = split.train_pairs
    users = split.val_users if users is None else users
    pool = split.node_pool

    graphs = {torch.device("cpu"): split.graph}

    def evaluate(model: EmbeddingModule, transform: BackwardTransform | None) -> dict:
        # A model on a GPU embeds a copy of the graph there (made once); ranking runs on the CPU.
        device = next(model.parameters()).device
        if device not in graphs:
            graphs[device] = split.graph.to(device)
        z_user, z_item = (z.cpu() for z in embedded(model, graphs[device]))
        metrics = {"recall": recall_at_k(z_user, z_item, eval_user, eval_item, known_user,
                                         known_item, users=users, item_pool=split.item_pool, k=k)}
        if targets is not None and transform is not None:
            rows = pool[targets[1][pool].cpu()]
            with torch.no_grad():
                predicted = transform(torch.cat([z_user, z_item])[rows].to(device)).cpu()
            metrics["align_error"] = alignment_error(predicted, targets[0][rows].cpu())
        return metrics

    return evaluate


def prepare_trainer(method: Method, spec: ModelSpec, graph: GraphTensors, config: TrainConfig,
                    previous: PreviousVersion | None, evaluator_for=None, *, rank: int = 0,
                    world_size: int = 1, item_pool: torch.Tensor | None = None,
                    device: torch.device | str = "cpu",
                    family: ModelFamily | None = None) -> VersionTrainer:
    """Build M_k (fresh or fine-tuned), B_k and the alignment for `method`.

    `evaluator_for(targets)` returns the evaluator, given the alignment targets (or None).
    `family` defaults to the one `spec` names.
    """
    family = family or family_of(spec)
    torch.manual_seed(config.seed)
    model = family.build(spec, Vocabularies.of(graph))
    if method.model == "finetune" and previous is not None:
        if previous.model is None:
            raise ConfigError("finetune-m0 needs the previous model itself")
        family.fine_tune_from(model, previous.model)
    family.prepare(model, graph)
    # Warm start copies M_{k-1}'s weights: only from a model of the same family.
    warm = (config.warm_start != "off" and previous is not None and previous.model is not None
            and previous.spec.family == spec.family)
    if warm:
        family.warm_start(model, previous.model, graph, config.warm_start, config.seed)
    alignment, targets = None, None
    if previous is not None and method.joint:
        targets = previous.targets(graph)
        transform = make_transform(method.transform, spec.output_dim, previous.dim)
        if warm:
            truncation_start(transform)
        amplifiers = previous.amplifiers if method.alignment == "multi" else None
        alignment = Alignment(transform, targets[0], targets[1], amplifiers)
    evaluator = evaluator_for(targets) if evaluator_for is not None else None
    return VersionTrainer(model, graph, config, alignment, evaluator, rank=rank,
                          world_size=world_size, item_pool=item_pool, device=device,
                          family=family)


def finish_version(method: Method, result: TrainResult, graph: GraphTensors,
                   config: TrainConfig, previous: PreviousVersion | None) -> VersionOutcome:
    """B_k after training: the jointly trained one, a post-hoc fit (also for a joint method
    that refits its B_k on the final M_k), or plain truncation."""
    if previous is None:
        return VersionOutcome(result.model, None, result)
    if method.joint and not method.refits:
        return VersionOutcome(result.model, result.transform.affine(), result)
    if method.posthoc or method.refits:
        targets, mask = previous.targets(graph)
        z_user, z_item = embedded(result.model, graph)
        z_new = torch.cat([z_user, z_item])[mask]
        amplifiers = previous.amplifiers if method.alignment == "multi" else None
        transform = fit_posthoc(method.fit, z_new, targets[mask], amplifiers,
                                epochs=config.posthoc_epochs, seed=config.seed)
        return VersionOutcome(result.model, transform, result)
    # No transform: consumers read the first D_{k-1} coordinates (as the reference does).
    transform = IdentityTransform(result.model.output_dim, previous.dim).affine()
    return VersionOutcome(result.model, transform, result)


def train_version(method: Method, spec: ModelSpec, graph: GraphTensors, config: TrainConfig,
                  previous: PreviousVersion | None, evaluator_for=None, on_epoch=None,
                  item_pool: torch.Tensor | None = None,
                  family: ModelFamily | None = None) -> VersionOutcome:
    if method.model == "fixed" and previous is not None:
        if previous.model is None:
            raise TrainingError("fix-m0 needs the previous model itself")
        transform = IdentityTransform(previous.dim, previous.dim).affine()
        return VersionOutcome(previous.model, transform, None)
    trainer = prepare_trainer(method, spec, graph, config, previous, evaluator_for,
                              item_pool=item_pool, family=family)
    result = trainer.fit(on_epoch)
    return finish_version(method, result, graph, config, previous)
