"""Scoring a finished candidate on the held-out edges, and the publication gate."""

from __future__ import annotations

import torch

from bc_ray.core.embedded import embedded
from bc_ray.core.evaluation import (
    alignment_breaches,
    recall_at_k,
    relative_alignment_error,
    relative_error_by_entity,
)
from bc_ray.core.family import EmbeddingModule
from bc_ray.core.splits import PeriodSplit
from bc_ray.core.version import PreviousVersion
from bc_ray.train.config import GateConfig

ALIGN_SAMPLE = 20_000  # entities the alignment error is measured on


def test_recall(model: EmbeddingModule, split: PeriodSplit) -> float:
    eval_user, eval_item = split.eval_pairs
    known_user, known_item = split.train_pairs
    z_user, z_item = (z.cpu() for z in embedded(model, split.graph))
    return recall_at_k(z_user, z_item, eval_user, eval_item, known_user, known_item,
                       users=split.test_users, item_pool=split.item_pool)


def score_candidate(model: EmbeddingModule, transform, split: PeriodSplit,
                    previous: PreviousVersion | None, sample: int = ALIGN_SAMPLE,
                    seed: int = 0) -> dict:
    """Recall@50 on the held-out test users; alignment error of B_k z_k against z_{k-1} on a
    sample of existing entities (absolute, and relative to the mean norm of z_{k-1})."""
    metrics = {"recall_at_50": test_recall(model, split)}
    if previous is None:
        return metrics
    if previous.model is not None:
        metrics["parent_recall_at_50"] = test_recall(previous.model, split)
    targets, mask = previous.targets(split.graph)
    pool = split.node_pool
    rows = pool[mask[pool]]
    generator = torch.Generator().manual_seed(seed)
    rows = rows[torch.randperm(rows.numel(), generator=generator)[:sample]]
    z = torch.cat(embedded(model, split.graph)).cpu()[rows]
    weight, bias = transform
    predicted = z @ torch.from_numpy(weight).T + torch.from_numpy(bias)
    expected = targets.cpu()[rows]
    error, relative = relative_alignment_error(predicted, expected)
    by_entity = relative_error_by_entity(predicted, expected, rows < split.graph.num_users)
    metrics.update(align_error=error, align_error_rel=relative, align_sample=int(rows.numel()),
                   align_error_rel_by_entity=by_entity)
    return metrics


def gate(metrics: dict, config: GateConfig) -> list[str]:
    """Reasons to reject (empty: publish)."""
    reasons = []
    if metrics["recall_at_50"] < config.min_recall:
        reasons.append(f"Recall@50 {metrics['recall_at_50']:.4f} is below the floor "
                       f"{config.min_recall}")
    parent = metrics.get("parent_recall_at_50")
    if parent and metrics["recall_at_50"] < config.min_recall_vs_parent * parent:
        reasons.append(f"Recall@50 {metrics['recall_at_50']:.4f} is below "
                       f"{config.min_recall_vs_parent} x the current version's {parent:.4f}")
    bound = config.max_align_error_rel
    reasons += [f"relative alignment error {error:.3f}{f' of the {entity}s' if entity else ''} "
                f"exceeds {bound}" for entity, error in alignment_breaches(metrics, bound)]
    return reasons
