"""Composed affine backward transforms in numpy (no torch): shared by the core, the store and the
consumer API.

Every transform is affine, B_k(z) = W_k z + b_k with W_k of shape (D_{k-1}, D_k). The composition
to version j, z~_j = B_{j+1} o ... o B_k (z_k), is again affine:

    W_k^j = W_{k-1}^j W_k,     b_k^j = W_{k-1}^j b_k + b_{k-1}^j,     W_k^k = I, b_k^k = 0

so it is pre-computed once per (j, k) and applying any historical version is one matmul.
"""

from __future__ import annotations

import io

import numpy as np

from bc_ray.exceptions import ShapeError

Affine = tuple[np.ndarray, np.ndarray]


def identity(dim: int) -> Affine:
    return np.eye(dim, dtype=np.float32), np.zeros(dim, dtype=np.float32)


def compose(parent_chain: dict[int, Affine], parent_version: int, transform: Affine
            ) -> dict[int, Affine]:
    """The chain of version k from its parent's chain (targets j <= parent) and B_k."""
    weight, bias = transform
    chain: dict[int, Affine] = {}
    for target, (w_parent, b_parent) in parent_chain.items():
        if w_parent.shape[1] != weight.shape[0]:
            raise ShapeError(f"transform to version {parent_version} has input dim "
                             f"{w_parent.shape[1]} but B_k outputs {weight.shape[0]}")
        chain[target] = ((w_parent @ weight).astype(np.float32),
                         (w_parent @ bias + b_parent).astype(np.float32))
    chain[parent_version] = (weight.astype(np.float32), bias.astype(np.float32))
    return chain


def compose_path(transforms: list[Affine]) -> Affine:
    """B_{j+1} o ... o B_k from [B_{j+1}, ..., B_k], multiplied in the order `compose` uses, so
    a path composed on demand equals the stored chain's entry."""
    weight, bias = transforms[0]
    weight, bias = weight.astype(np.float32), bias.astype(np.float32)
    for next_weight, next_bias in transforms[1:]:
        if weight.shape[1] != next_weight.shape[0]:
            raise ShapeError(f"transform of input dim {weight.shape[1]} cannot follow one that "
                             f"outputs {next_weight.shape[0]}")
        weight, bias = ((weight @ next_weight).astype(np.float32),
                        (weight @ next_bias + bias).astype(np.float32))
    return weight, bias


def apply(embeddings: np.ndarray, transform: Affine,
          out: np.ndarray | None = None) -> np.ndarray:
    """Row-wise z W^T + b for a (rows, D_k) matrix; into `out` when given (a slice of a larger
    matrix that a reader fills a file at a time)."""
    weight, bias = transform
    if embeddings.ndim != 2 or embeddings.shape[1] != weight.shape[1]:
        raise ShapeError(f"embeddings of shape {embeddings.shape} do not match a transform "
                         f"from dimension {weight.shape[1]}")
    out = np.matmul(embeddings, weight.T, out=out)
    if np.any(bias):
        out += bias
    return out


def to_bytes(chain: dict[int, Affine]) -> bytes:
    arrays = {}
    for target, (weight, bias) in chain.items():
        arrays[f"W_{target}"], arrays[f"b_{target}"] = weight, bias
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def from_bytes(data: bytes) -> dict[int, Affine]:
    with np.load(io.BytesIO(data)) as arrays:
        targets = sorted({int(name.split("_", 1)[1]) for name in arrays.files})
        return {t: (arrays[f"W_{t}"], arrays[f"b_{t}"]) for t in targets}


def transform_to_bytes(transform: Affine) -> bytes:
    return to_bytes({0: transform})


def transform_from_bytes(data: bytes) -> Affine:
    return from_bytes(data)[0]
