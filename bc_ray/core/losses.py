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


def alignment_single(predicted_prev: torch.Tensor, target_prev: torch.Tensor) -> torch.Tensor:
    """L_align = mean_x || B_k(z_k(x)) - z_{k-1}(x) ||^2  (per coordinate)."""
    if predicted_prev.numel() == 0:
        return predicted_prev.sum() * 0.0
    return (predicted_prev - target_prev).pow(2).mean()


def alignment_multi(predicted_prev: torch.Tensor, target_prev: torch.Tensor,
                    amplifiers: list[torch.Tensor]) -> torch.Tensor:
    """L_align = mean_x (1/k) sum_{j=0}^{k-1} || W_{k-1}^j delta_k(x) ||^2,  delta_k = B_k z_k - z_{k-1}

    `amplifiers` are W_{k-1}^j for j = 0..k-1 (W_{k-1}^{k-1} = I): the error made now, as it
    reaches every older version through the fixed older transforms.
    """
    if predicted_prev.numel() == 0:
        return predicted_prev.sum() * 0.0
    delta = predicted_prev - target_prev
    terms = [(delta @ amplifier.T).pow(2).mean() for amplifier in amplifiers]
    return torch.stack(terms).mean()
