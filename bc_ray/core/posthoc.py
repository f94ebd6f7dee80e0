"""Post-hoc transforms, fitted after M_k is trained and frozen.

- ``sgd``: a linear B_k trained by Adam on the single- or multi-step alignment loss (the paper's
  Post-Lin-SLoss / Post-Lin-MLoss).
- ``procrustes``: W = argmin ||W Z_k - Z_{k-1}|| with orthonormal rows/columns, in closed form from
  the SVD of Z_{k-1}^T Z_k (semi-orthogonal when the dimensions differ).
- ``lowrank``: reduced-rank affine regression z_{k-1} ~ A z_k + b with rank(A) <= r (ordinary least
  squares projected onto the top-r directions of the fitted values).
- ``least-squares``: the full-rank affine regression, which BC-Aligner + refit puts in place of
  the jointly trained B_k once M_k is trained.
"""

from __future__ import annotations

import numpy as np
import torch

from bc_ray.chain import Affine
from bc_ray.core.losses import alignment_multi, alignment_single
from bc_ray.core.transforms import LinearTransform
from bc_ray.exceptions import ConfigError, ShapeError

LOWRANK_DEFAULT = 32


def fit_posthoc(fit: str, z_new: torch.Tensor, z_prev: torch.Tensor,
                amplifiers: list[torch.Tensor] | None = None, epochs: int = 200,
                batch_size: int = 2048, lr: float = 1e-3, seed: int = 0,
                rank: int = LOWRANK_DEFAULT) -> Affine:
    if z_new.shape[0] != z_prev.shape[0]:
        raise ShapeError(f"{z_new.shape[0]} new embeddings but {z_prev.shape[0]} targets")
    if fit == "sgd":
        return _fit_sgd(z_new, z_prev, amplifiers, epochs, batch_size, lr, seed)
    new, prev = z_new.detach().cpu().numpy(), z_prev.detach().cpu().numpy()  # closed forms
    if fit == "procrustes":
        return procrustes(new, prev)
    if fit == "lowrank":
        return lowrank_affine(new, prev, rank)
    if fit == "least-squares":
        return least_squares(new, prev)
    raise ConfigError(f"unknown post-hoc fit {fit!r}; expected sgd, procrustes, lowrank or "
                      "least-squares")


def _fit_sgd(z_new, z_prev, amplifiers, epochs, batch_size, lr, seed) -> Affine:
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    transform = LinearTransform(z_new.shape[1], z_prev.shape[1])
    optimizer = torch.optim.Adam(transform.parameters(), lr=lr)
    for _ in range(epochs):
        order = torch.randperm(z_new.shape[0], generator=generator)
        for start in range(0, order.numel(), batch_size):
            rows = order[start:start + batch_size]
            predicted = transform(z_new[rows])
            loss = (alignment_single(predicted, z_prev[rows]) if amplifiers is None
                    else alignment_multi(predicted, z_prev[rows], amplifiers))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return transform.affine()


def procrustes(z_new: np.ndarray, z_prev: np.ndarray) -> Affine:
    """Orthogonal (semi-orthogonal) W minimising ||z_new W^T - z_prev||_F."""
    u, _, vt = np.linalg.svd(z_prev.T.astype(np.float64) @ z_new.astype(np.float64),
                             full_matrices=False)
    weight = (u @ vt).astype(np.float32)
    return weight, np.zeros(z_prev.shape[1], dtype=np.float32)


def least_squares(z_new: np.ndarray, z_prev: np.ndarray) -> Affine:
    """The affine B minimising the mean over the given rows of ||B z_new - z_prev||^2, and so
    the multi-step loss over the same rows, equally weighted, too: that loss is the same
    residuals under a fixed positive-definite metric (the mean of the amplifiers' A^T A, the
    identity among them), and an unconstrained affine regression has the same minimiser under
    every such metric (its normal equations X^T R M = 0 hold iff X^T R = 0)."""
    if z_new.shape[0] == 0:
        raise ShapeError("a least-squares B_k needs entities with both versions' embeddings: "
                         "there are none")
    return lowrank_affine(z_new, z_prev, min(z_new.shape[1], z_prev.shape[1]))


def lowrank_affine(z_new: np.ndarray, z_prev: np.ndarray, rank: int) -> Affine:
    x = z_new.astype(np.float64)
    y = z_prev.astype(np.float64)
    x_mean, y_mean = x.mean(0), y.mean(0)
    xc, yc = x - x_mean, y - y_mean
    coef, *_ = np.linalg.lstsq(xc, yc, rcond=None)  # (D_k, D_{k-1})
    fitted = xc @ coef
    _, _, vt = np.linalg.svd(fitted, full_matrices=False)
    basis = vt[: min(rank, vt.shape[0])]
    weight = (coef @ basis.T @ basis).T  # (D_{k-1}, D_k), rank <= r
    bias = y_mean - weight @ x_mean
    return weight.astype(np.float32), bias.astype(np.float32)
