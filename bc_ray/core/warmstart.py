"""Warm start (beyond the paper): version k starts from M_{k-1} instead of from scratch.

- Every parameter is copied where shapes allow; a wider matrix gets the old block in its top-left
  corner and keeps its fresh random initialisation elsewhere (zero padding would leave the new
  units with identical, zero gradients). BatchNorm statistics are copied the same way.
- ID rows of entities M_{k-1} knew are copied. Entities it did not know get
  ``mean``: the mean of the known rows plus small noise, or
  ``metadata``: the average, over the entity's feature codes (categories, brands, genres,
  demographics), of the mean row of the known entities carrying that code; the mean when none of
  its codes is carried by a known entity. Sparse, so it scales with the number of codes.
- Any family whose model keeps its ID tables as GraphSAGE does (`ids[entity]`, a padding row
  last, `spec.id_embeddings`; see core/encoders.py) gets the ID-row strategies.
- A linear B_k starts as the truncation [I 0], which is exactly right when M_k = M_{k-1}.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from bc_ray.core.graph import FeatureBag, GraphTensors
from bc_ray.core.transforms import BackwardTransform, LinearTransform
from bc_ray.exceptions import ConfigError

WARM_STARTS = ("off", "mean", "metadata")
NOISE = 0.1


@torch.no_grad()
def copy_overlap(target: torch.Tensor, source: torch.Tensor) -> None:
    """Copy `source` into the leading corner of `target` (any rank, any sizes)."""
    region = tuple(slice(0, min(a, b)) for a, b in zip(target.shape, source.shape))
    target[region] = source[region].to(target.dtype)


def _code_matrix(features: dict[str, FeatureBag], vocab: dict[str, int],
                 count: int) -> torch.Tensor:
    """Sparse (entities x all codes) multi-hot matrix over every feature field."""
    rows, cols, offset = [], [], 0
    for name in sorted(features):
        bag = features[name].limited(vocab.get(name, 0))
        owner = torch.repeat_interleave(torch.arange(bag.lengths.numel()), bag.lengths)
        rows.append(owner)
        cols.append(bag.values + offset)
        offset += vocab.get(name, 0)
    if not rows or offset == 0:
        return torch.sparse_coo_tensor(torch.zeros((2, 0), dtype=torch.long), torch.zeros(0),
                                       (count, 1))
    index = torch.stack([torch.cat(rows), torch.cat(cols)])
    with warnings.catch_warnings():  # sparse invariant checks: the indices are built above
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_coo_tensor(index, torch.ones(index.shape[1]),
                                       (count, offset)).coalesce()


@torch.no_grad()
def _init_new_rows(table: torch.Tensor, known: torch.Tensor, new: torch.Tensor,
                   strategy: str, codes: torch.Tensor, generator: torch.Generator) -> None:
    if new.numel() == 0 or known.numel() == 0:
        return
    reference = table[known]
    mean, spread = reference.mean(0), reference.std(0).clamp(min=1e-6)
    noise = torch.randn(new.numel(), table.shape[1], generator=generator) * spread * NOISE
    init = mean.expand(new.numel(), -1).clone()
    if strategy == "metadata":
        known_codes = _rows(codes, known)
        code_count = torch.sparse.sum(known_codes, 0).to_dense()
        code_mean = torch.sparse.mm(known_codes.t(), reference) / code_count.clamp(min=1)[:, None]
        usable = (code_count > 0).float()
        new_codes = _rows(codes, new)
        weight = torch.sparse.mm(new_codes, usable[:, None]).squeeze(1)
        mixed = torch.sparse.mm(new_codes, code_mean * usable[:, None])
        has = weight > 0
        init[has] = mixed[has] / weight[has, None]
    table[new] = init + noise


def _rows(matrix: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    return matrix.index_select(0, rows).coalesce()


@torch.no_grad()
def warm_start(model: nn.Module, previous: nn.Module, graph: GraphTensors,
               strategy: str, seed: int = 0) -> None:
    if strategy not in WARM_STARTS:
        raise ConfigError(f"warm start {strategy!r} is not one of {WARM_STARTS}")
    if strategy == "off":
        return
    own = dict(model.named_parameters()) | dict(model.named_buffers())
    for name, value in list(previous.named_parameters()) + list(previous.named_buffers()):
        if name in own and own[name].dim() == value.dim() and not name.startswith("ids."):
            copy_overlap(own[name], value)
    if not model.spec.id_embeddings or not previous.spec.id_embeddings:
        return
    generator = torch.Generator().manual_seed(seed)
    degrees = dict(zip(("user", "item"), graph.degrees()))
    for entity in ("user", "item"):
        table, old = model.ids[entity].weight, previous.ids[entity].weight
        old_rows = old.shape[0] - 1  # the last row is the padding row
        copy_overlap(table[:old_rows], old[:old_rows])
        rows = torch.arange(table.shape[0] - 1)
        trained = torch.zeros(table.shape[0] - 1, dtype=torch.bool)
        trained[:old_rows] = old[:old_rows].abs().sum(1) > 0
        seen = degrees[entity][: rows.numel()] > 0
        known, new = rows[trained], rows[seen & ~trained]
        codes = _code_matrix(graph.features(entity), getattr(graph, f"{entity}_vocab"),
                             rows.numel()) if strategy == "metadata" else None
        _init_new_rows(table, known, new, strategy, codes, generator)


@torch.no_grad()
def fine_tune_copy(model: nn.Module, previous: nn.Module) -> None:
    """finetune-m0: M_k starts as M_{k-1} exactly, on a snapshot that may have grown since.
    Its ID tables (`ids.<entity>`, the padding row last) and feature-code tables may have more
    rows now: M_{k-1}'s rows are copied, the new ones keep their fresh initialisation and the
    padding row stays last and zero."""
    if previous.spec != model.spec:
        raise ConfigError("finetune-m0 cannot change the architecture: the version spec must "
                          f"equal the previous one ({previous.spec})")
    own = model.state_dict()
    merged = dict(own)  # a weight M_k has and M_{k-1} lacks (a feature field new) stays fresh
    for name, value in previous.state_dict().items():
        mine = own.get(name)
        if mine is None:  # a feature field the data no longer has
            continue
        if not (isinstance(value, torch.Tensor) and isinstance(mine, torch.Tensor)):
            merged[name] = value  # a module's extra state
            continue
        fresh = mine.detach().clone()
        if name.startswith("ids.") and value.shape != mine.shape:
            rows = min(value.shape[0], mine.shape[0]) - 1  # the last row is padding
            fresh[:rows] = value[:rows]
        else:
            copy_overlap(fresh, value)
        merged[name] = fresh
    model.load_state_dict(merged)


@torch.no_grad()
def truncation_start(transform: BackwardTransform) -> None:
    """B_k = [I 0] (the right map while M_k still equals M_{k-1})."""
    if isinstance(transform, LinearTransform):
        transform.linear.weight.copy_(torch.eye(transform.out_dim, transform.in_dim))
