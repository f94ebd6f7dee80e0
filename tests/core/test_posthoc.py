import numpy as np
import torch

from bc_ray.core.posthoc import fit_posthoc, lowrank_affine, procrustes


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
    error = (z_new @ torch.from_numpy(weight).T + torch.from_numpy(bias) - z_prev).norm(dim=1).mean()
    assert error < 0.1 * z_prev.norm(dim=1).mean()
