"""Metrics: Recall@K of the intended task, embedding alignment error, ROC-AUC, degradations."""

from __future__ import annotations

import numpy as np
import torch

ITEM_BLOCK = 1 << 16  # items scored at once (`top_items`)


@torch.no_grad()
def recall_at_k(z_user: torch.Tensor, z_item: torch.Tensor, eval_user: torch.Tensor,
                eval_item: torch.Tensor, known_user: torch.Tensor, known_item: torch.Tensor,
                users: torch.Tensor | None = None, item_pool: torch.Tensor | None = None,
                k: int = 50, chunk: int = 512) -> float:
    """Mean over users of |top-K ∩ new items| / |new items|.

    Ranks every item of `item_pool` (default all) by <z_u, z_i>, excluding the items the user
    already interacted with (`known_*`); ground truth is the (user, item) pairs in `eval_*`.
    `users` restricts the evaluated users (default: every user with an eval edge).
    """
    total, count = recall_sum(z_user, z_item, eval_user, eval_item, known_user, known_item,
                              users, item_pool, k, chunk)
    return total / count if count else float("nan")


@torch.no_grad()
def recall_sum(z_user: torch.Tensor, z_item: torch.Tensor, eval_user: torch.Tensor,
               eval_item: torch.Tensor, known_user: torch.Tensor, known_item: torch.Tensor,
               users: torch.Tensor | None = None, item_pool: torch.Tensor | None = None,
               k: int = 50, chunk: int = 512) -> tuple[float, int]:
    """(the sum of `recall_at_k`'s per-user recalls, how many users): its two parts, which
    workers that each rank a share of the users add up (`sharded_recall`)."""
    num_items = z_item.shape[0]
    gt_keys = torch.unique(eval_user * num_items + eval_item)
    gt_count = torch.bincount(gt_keys // num_items, minlength=z_user.shape[0])
    users = torch.unique(eval_user) if users is None else users[gt_count[users] > 0]
    if users.numel() == 0:
        return 0.0, 0
    blocked = torch.zeros(num_items, dtype=torch.bool)
    if item_pool is not None:
        blocked[:] = True
        blocked[item_pool] = False
    known_order = torch.argsort(known_user)
    known_user, known_item = known_user[known_order], known_item[known_order]
    total = torch.zeros((), dtype=torch.float64)
    for start in range(0, users.numel(), chunk):
        batch = users[start:start + chunk]
        lo = torch.searchsorted(known_user, batch)
        hi = torch.searchsorted(known_user, batch, right=True)
        owner = torch.repeat_interleave(torch.arange(batch.numel()), hi - lo)
        offset = torch.arange(int((hi - lo).sum())) - (torch.cumsum(hi - lo, 0) - (hi - lo))[owner]
        top = top_items(z_user[batch], z_item, blocked, owner, known_item[lo[owner] + offset], k)
        hits = torch.isin(batch[:, None] * num_items + top, gt_keys).sum(1)
        total += (hits.double() / gt_count[batch].double()).sum()
    return float(total), int(users.numel())


def top_items(queries: torch.Tensor, z_item: torch.Tensor, blocked: torch.Tensor,
              owner: torch.Tensor, known: torch.Tensor, k: int,
              block: int = ITEM_BLOCK) -> torch.Tensor:
    """The `k` best items of each query row by <q, z_i>, skipping `blocked` items and the
    (`owner` row, `known` item) pairs. Items are scored a block at a time, the best kept
    across blocks: a chunk's scores are `queries x block`, not `queries x every item` (2 GB for
    512 users over 1M items). Up to `block` items it is one block, as scoring them all at once."""
    num_items = z_item.shape[0]
    best_scores = best = None
    for first in range(0, num_items, block):
        last = min(first + block, num_items)
        scores = queries @ z_item[first:last].T
        scores[:, blocked[first:last]] = -torch.inf
        inside = (known >= first) & (known < last)
        scores[owner[inside], known[inside] - first] = -torch.inf
        top_scores, top = torch.topk(scores, min(k, last - first), dim=1)
        del scores
        top += first
        if best is not None:
            top_scores, order = torch.topk(torch.cat([best_scores, top_scores], 1),
                                           min(k, best.shape[1] + top.shape[1]), dim=1)
            top = torch.gather(torch.cat([best, top], 1), 1, order)
        best_scores, best = top_scores, top
    return best


def alignment_error(predicted: torch.Tensor | np.ndarray,
                    target: torch.Tensor | np.ndarray) -> float:
    """Mean L2 distance || z~ - z || over entities."""
    predicted = torch.as_tensor(predicted)
    target = torch.as_tensor(target)
    if predicted.shape != target.shape:
        from bc_ray.exceptions import ShapeError

        raise ShapeError(f"cannot compare embeddings of shape {tuple(predicted.shape)} with "
                         f"{tuple(target.shape)}")
    if predicted.numel() == 0:
        return float("nan")
    return float((predicted - target).norm(dim=1).mean())


def relative_alignment_error(predicted: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
    """(mean ||z~ - z||, that over mean ||z||): the gates' measure, which a rescaled space
    cannot game."""
    error = alignment_error(predicted, target)
    return error, error / max(float(torch.as_tensor(target).norm(dim=1).mean()), 1e-12)


# The fewest rows of an entity its own error is gated on: one row's error is noise (the pooled
# error still covers an entity with fewer).
MIN_ENTITY_SAMPLE = 5


def relative_error_by_entity(predicted: torch.Tensor, target: torch.Tensor,
                             is_user: torch.Tensor) -> dict[str, float]:
    """`relative_alignment_error` of the users' rows and of the items' (each with at least
    `MIN_ENTITY_SAMPLE` rows): pooled, one entity's broken alignment could hide behind the
    other's."""
    return {entity: relative_alignment_error(predicted[rows], target[rows])[1]
            for entity, rows in (("user", is_user), ("item", ~is_user))
            if int(rows.sum()) >= MIN_ENTITY_SAMPLE}


def alignment_breaches(metrics: dict, bound: float) -> list[tuple[str | None, float]]:
    """(entity, error) of each entity whose relative alignment error
    (`align_error_rel_by_entity`) is not within `bound`, or, where none is, (None, the pooled
    `align_error_rel`) if that is not: what both gates refuse (NaN is never within)."""
    over: list[tuple[str | None, float]] = [
        (entity, error) for entity, error in metrics.get("align_error_rel_by_entity", {}).items()
        if not error <= bound]
    pooled = metrics.get("align_error_rel")
    if not over and pooled is not None and not pooled <= bound:
        over.append((None, pooled))
    return over


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve by the rank statistic (ties get their average rank)."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels).astype(bool)
    positives, negatives = labels.sum(), (~labels).sum()
    if positives == 0 or negatives == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(scores.size)
    ranks[order] = np.arange(1, scores.size + 1)
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    average = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(average, counts)
    return float((ranks[labels].sum() - positives * (positives + 1) / 2.0)
                 / (positives * negatives))


def degradation_pct(value: float, reference: float) -> float:
    """100 * (value - reference) / reference: the paper's relative degradation."""
    return 100.0 * (value - reference) / reference if reference else float("nan")
