"""Training losses: BPR for the intended task, single- and multi-step alignment (method.md).

Squared errors are averaged over entities *and coordinates* (as the reference implementation does),
which is the scale the paper's lambda = 16 was tuned for.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bpr_loss(z_user: torch.Tensor, z_pos: torch.Tensor, z_neg: torch.Tensor) -> torch.Tensor:
    """mean softplus(<u, i-> - <u, i+>): rank a positive item above a sampled negative."""
    pos = (z_user * z_pos).sum(-1)
    neg = (z_user * z_neg).sum(-1)
    return F.softplus(neg - pos).mean()


def embedding_l2(z_user: torch.Tensor, z_pos: torch.Tensor, z_neg: torch.Tensor) -> torch.Tensor:
    """(||u||^2 + ||i+||^2 + ||i-||^2) / (2 B): the reference's regulariser on batch embeddings."""
    squares = z_user.pow(2).sum() + z_pos.pow(2).sum() + z_neg.pow(2).sum()
    return 0.5 * squares / z_user.shape[0]


def _node_mean(squared: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """The mean of squared errors (one row per node), over nodes weighted by `weights`."""
    if weights is None:
        return squared.mean()
    return (squared.mean(-1) * weights).sum() / weights.sum()


def alignment_single(predicted_prev: torch.Tensor, target_prev: torch.Tensor,
                     weights: torch.Tensor | None = None) -> torch.Tensor:
    """L_align = mean_x || B_k(z_k(x)) - z_{k-1}(x) ||^2  (per coordinate; mean over x weighted
    by `weights` when given)."""
    if predicted_prev.numel() == 0:
        return predicted_prev.sum() * 0.0
    return _node_mean((predicted_prev - target_prev).pow(2), weights)


def alignment_multi(predicted_prev: torch.Tensor, target_prev: torch.Tensor,
                    amplifiers: list[torch.Tensor],
                    weights: torch.Tensor | None = None) -> torch.Tensor:
    """L_align = mean_x (1/k) sum_{j=0}^{k-1} || W_{k-1}^j delta_k(x) ||^2,
    delta_k = B_k z_k - z_{k-1}

    `amplifiers` are W_{k-1}^j for j = 0..k-1 (W_{k-1}^{k-1} = I): the error made now, as it
    reaches every older version through the fixed older transforms.
    """
    if predicted_prev.numel() == 0:
        return predicted_prev.sum() * 0.0
    delta = predicted_prev - target_prev
    terms = [_node_mean((delta @ amplifier.T).pow(2), weights)
             for amplifier in amplifiers]
    return torch.stack(terms).mean()
