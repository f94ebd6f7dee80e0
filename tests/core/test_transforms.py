import numpy as np
import pytest
import torch

from bc_ray import chain as chain_math
from bc_ray.core.transforms import TransformChain, make_transform
from bc_ray.exceptions import ConfigError, ShapeError


def test_identity_truncates_and_pads():
    z = torch.arange(6.0)[None]
    assert make_transform("identity", 6, 4)(z).tolist() == [[0, 1, 2, 3]]
    assert make_transform("identity", 2, 4)(z[:, :2]).tolist() == [[0, 1, 0, 0]]


def test_orthogonal_is_semi_orthogonal_and_trainable():
    for in_dim, out_dim in ((8, 8), (10, 6), (6, 10)):
        transform = make_transform("orthogonal", in_dim, out_dim)
        weight = transform.weight_matrix()
        gram = weight @ weight.T if out_dim <= in_dim else weight.T @ weight
        assert torch.allclose(gram, torch.eye(min(in_dim, out_dim)), atol=1e-5)
        assert any(p.requires_grad for p in transform.parameters())


def test_chain_precomputes_compositions():
    rng = np.random.default_rng(0)
    dims = [4, 6, 8, 5]
    transforms = [(rng.normal(size=(dims[i], dims[i + 1])).astype(np.float32),
                   rng.normal(size=dims[i]).astype(np.float32)) for i in range(3)]
    chain = TransformChain(dims, transforms)
    z = rng.normal(size=(7, 5)).astype(np.float32)
    step = z
    for target in (2, 1, 0):
        weight, bias = transforms[target]
        step = step @ weight.T + bias
        assert np.allclose(chain_math.apply(z, chain.to(target)), step, atol=1e-4)
    assert chain.to(3)[0].shape == (5, 5)
    amplifiers = chain.amplifiers()
    assert [a.shape[0] for a in amplifiers] == [4, 6, 8, 5]
    assert torch.equal(amplifiers[-1], torch.eye(5))


def test_shape_and_name_errors():
    with pytest.raises(ShapeError):
        make_transform("linear", 4, 3)(torch.zeros(2, 5))
    with pytest.raises(ConfigError, match="unknown transform"):
        make_transform("quadratic", 4, 3)
    with pytest.raises(ShapeError):
        TransformChain([4, 6], [(np.zeros((3, 6), np.float32), np.zeros(3, np.float32))])
    with pytest.raises(ShapeError):
        chain_math.apply(np.zeros((2, 3), np.float32), chain_math.identity(4))
