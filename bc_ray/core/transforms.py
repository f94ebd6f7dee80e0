"""Backward transforms B_k: R^{D_k} -> R^{D_{k-1}}, and the chain that composes them.

- ``linear``: B_k(z) = W_k z (any D_k -> D_{k-1}).
- ``identity`` (NoTrans): the first D_{k-1} coordinates (zero padding when D_k < D_{k-1}).
- ``orthogonal``: W_k with orthonormal rows or columns (semi-orthogonal when the dimensions
  differ), via PyTorch's orthogonal parametrisation; it keeps distances, so the space is
  stabilised rather than re-learned.

Every transform is affine, so a `TransformChain` pre-computes W_k^j for every older version j
(see bc_ray/chain.py) and serving any historical version is a single matmul.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrizations

from bc_ray import chain as chain_math
from bc_ray.exceptions import ConfigError, ShapeError

TRANSFORM_KINDS = ("identity", "linear", "orthogonal")


class BackwardTransform(nn.Module):
    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.in_dim, self.out_dim = in_dim, out_dim

    def weight_matrix(self) -> torch.Tensor:
        raise NotImplementedError

    def bias_vector(self) -> torch.Tensor:
        return self.weight_matrix().new_zeros(self.out_dim)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        if z.shape[-1] != self.in_dim:
            raise ShapeError(f"transform expects {self.in_dim}-dim embeddings, got {z.shape[-1]}")
        return z @ self.weight_matrix().T + self.bias_vector()

    def affine(self) -> chain_math.Affine:
        with torch.no_grad():
            return (self.weight_matrix().detach().numpy().astype(np.float32).copy(),
                    self.bias_vector().detach().numpy().astype(np.float32).copy())


class LinearTransform(BackwardTransform):
    def __init__(self, in_dim: int, out_dim: int, bias: bool = False) -> None:
        super().__init__(in_dim, out_dim)
        self.linear = nn.Linear(in_dim, out_dim, bias=bias)

    def weight_matrix(self) -> torch.Tensor:
        return self.linear.weight

    def bias_vector(self) -> torch.Tensor:
        return self.linear.bias if self.linear.bias is not None else super().bias_vector()


class IdentityTransform(BackwardTransform):
    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__(in_dim, out_dim)
        self.register_buffer("weight", torch.eye(out_dim, in_dim))

    def weight_matrix(self) -> torch.Tensor:
        return self.weight


class OrthogonalTransform(BackwardTransform):
    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__(in_dim, out_dim)
        self.linear = parametrizations.orthogonal(nn.Linear(in_dim, out_dim, bias=False))

    def weight_matrix(self) -> torch.Tensor:
        return self.linear.weight


class FixedTransform(BackwardTransform):
    """A stored affine transform (no parameters): older versions' B_j at training time."""

    def __init__(self, transform: chain_math.Affine) -> None:
        weight, bias = transform
        super().__init__(weight.shape[1], weight.shape[0])
        self.register_buffer("weight", torch.from_numpy(np.asarray(weight, np.float32)))
        self.register_buffer("bias", torch.from_numpy(np.asarray(bias, np.float32)))

    def weight_matrix(self) -> torch.Tensor:
        return self.weight

    def bias_vector(self) -> torch.Tensor:
        return self.bias


def make_transform(kind: str, in_dim: int, out_dim: int) -> BackwardTransform:
    if kind == "linear":
        return LinearTransform(in_dim, out_dim)
    if kind == "identity":
        return IdentityTransform(in_dim, out_dim)
    if kind == "orthogonal":
        return OrthogonalTransform(in_dim, out_dim)
    raise ConfigError(f"unknown transform kind {kind!r}; expected one of {TRANSFORM_KINDS}")


class TransformChain:
    """The transforms B_1..B_k of one lineage, with W_k^j pre-computed for every j < k."""

    def __init__(self, dims: list[int], transforms: list[chain_math.Affine] | None = None) -> None:
        self.dims = [dims[0]]
        self.transforms: list[chain_math.Affine] = []
        self._chains: list[dict[int, chain_math.Affine]] = [{}]
        for dim, transform in zip(dims[1:], transforms or []):
            self.append(transform, dim)

    @property
    def latest(self) -> int:
        return len(self.dims) - 1

    def append(self, transform: chain_math.Affine, dim: int) -> None:
        weight = transform[0]
        if weight.shape != (self.dims[-1], dim):
            raise ShapeError(f"B_{self.latest + 1} has shape {weight.shape}, expected "
                             f"({self.dims[-1]}, {dim})")
        self._chains.append(chain_math.compose(self._chains[-1], self.latest, transform))
        self.transforms.append(transform)
        self.dims.append(dim)

    def to(self, target: int, source: int | None = None) -> chain_math.Affine:
        """(W, b) mapping ver-`source` (default latest) embeddings to ver-`target` ones."""
        source = self.latest if source is None else source
        if not 0 <= target <= source <= self.latest:
            raise ShapeError(f"no transform from version {source} to {target} in a chain of "
                             f"versions 0..{self.latest}")
        if target == source:
            return chain_math.identity(self.dims[source])
        return self._chains[source][target]

    def apply(self, z: torch.Tensor, target: int, source: int | None = None) -> torch.Tensor:
        weight, bias = self.to(target, source)
        return z @ torch.from_numpy(weight).T + torch.from_numpy(bias)

    def amplifiers(self) -> list[torch.Tensor]:
        """W_{k-1}^j for j = 0..k-1 (the last is I), where k-1 is the latest version: the fixed
        matrices that multiply the new error delta_k in the multi-step loss."""
        return [torch.from_numpy(self.to(j)[0]) for j in range(self.latest + 1)]
