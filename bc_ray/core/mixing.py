"""Cold start by age-aware mixing of ID and metadata embeddings (beyond the paper).

    h_0(x) = meta(x) + a(age) * ID(x),   a(age) = sigmoid(w * log(1 + s * age) + b)

with per-dimension w, b: a new entity (age 0) leans on its metadata, an old one adds its learned
ID as far as its age has earned trust. The metadata path is always on, so new and old entities
share one input space (a convex mix, a * ID + (1 - a) * meta, put old, ID-driven items and new,
metadata-driven ones in different regions and made cold-item recall collapse: see
benchmarks/RESULTS.md). During training the ID of a random `id_dropout` share of entities is
dropped (as if they were new), so the metadata path learns to stand alone.
"""

from __future__ import annotations

import torch
from torch import nn

AGE_SCALE = 100.0  # ages are edge-fraction times (0..1): 0.01 is already "a while"


class AgeMixing(nn.Module):
    def __init__(self, dim: int, id_dropout: float = 0.2) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.id_dropout = id_dropout

    def gate(self, age: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.weight * torch.log1p(AGE_SCALE * age)[:, None] + self.bias)

    def forward(self, ids: torch.Tensor, meta: torch.Tensor, age: torch.Tensor) -> torch.Tensor:
        if self.training and self.id_dropout > 0:
            dropped = torch.rand(age.numel(), device=age.device) < self.id_dropout
            ids = ids.masked_fill(dropped[:, None], 0.0)
            age = age.masked_fill(dropped, 0.0)
        return meta + self.gate(age) * ids
