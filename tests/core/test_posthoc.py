import numpy as np
import pytest
import torch

from bc_ray.core.losses import alignment_multi
from bc_ray.core.posthoc import fit_posthoc, least_squares, lowrank_affine, procrustes
from bc_ray.exceptions import ShapeError


def test_procrustes_recovers_an_orthogonal_map():
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(8, 8)))
    z_new = rng.normal(size=(200, 8))
    weight, bias = procrustes(z_new, z_new @ q.T)
    assert np.allclose(weight, q, atol=1e-4) and not bias.any()
    semi, _ = procrustes(rng.normal(size=(100, 10)), rng.normal(size=(100, 6)))
    assert np.allclose(semi @ semi.T, np.eye(6), atol=1e-5)


def test_lowrank_affine_recovers_a_low_rank_map():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(6, 2)) @ rng.normal(size=(2, 10))
    z_new = rng.normal(size=(500, 10))
    z_prev = z_new @ a.T + 3.0
    weight, bias = lowrank_affine(z_new, z_prev, rank=2)
    assert np.linalg.matrix_rank(weight, tol=1e-4) == 2
    assert np.allclose(z_new @ weight.T + bias, z_prev, atol=1e-3)


def test_sgd_fit_reduces_the_alignment_error():
    torch.manual_seed(0)
    z_new = torch.randn(300, 8)
    z_prev = z_new @ torch.randn(8, 5)
    weight, bias = fit_posthoc("sgd", z_new, z_prev, epochs=300, lr=1e-2)
    predicted = z_new @ torch.from_numpy(weight).T + torch.from_numpy(bias)
    error = (predicted - z_prev).norm(dim=1).mean()
    assert error < 0.1 * z_prev.norm(dim=1).mean()


def test_least_squares_minimises_the_multi_step_loss_too():
    """BC-Aligner + refit's B_k: the affine least-squares fit is a stationary point (so, the
    loss being convex, the minimum) of the multi-step loss under any amplifiers."""
    rng = np.random.default_rng(2)
    z_new = rng.normal(size=(400, 10)).astype(np.float32)
    z_prev = (z_new @ rng.normal(size=(10, 6)) + rng.normal(size=(400, 6))).astype(np.float32)
    weight, bias = least_squares(z_new, z_prev)
    assert np.array_equal(fit_posthoc("least-squares", torch.from_numpy(z_new),
                                      torch.from_numpy(z_prev))[0], weight)
    # W_{k-1}^j maps version k-1's space to version j's, of another width.
    amplifiers = [torch.from_numpy(rng.normal(size=(4, 6)).astype(np.float32)),
                  torch.from_numpy(rng.normal(size=(6, 6)).astype(np.float32)), torch.eye(6)]
    w = torch.tensor(weight, dtype=torch.float64, requires_grad=True)
    b = torch.tensor(bias, dtype=torch.float64, requires_grad=True)
    x, y = torch.from_numpy(z_new).double(), torch.from_numpy(z_prev).double()
    loss = alignment_multi(x @ w.T + b, y, [a.double() for a in amplifiers])
    loss.backward()
    assert w.grad.abs().max() < 1e-4 and b.grad.abs().max() < 1e-4
    with torch.no_grad():
        nudged = alignment_multi(x @ (w + 0.01).T + b, y, [a.double() for a in amplifiers])
    assert nudged > loss
    with pytest.raises(ShapeError, match="both versions"):
        least_squares(z_new[:0], z_prev[:0])
