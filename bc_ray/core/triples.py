"""Training triples (user, positive item, negative item) for BPR, re-drawn every epoch.

Users are drawn uniformly (each edge weighted 1/deg(user), as the reference does, so heavy users
do not dominate); negatives are uniform over items or popularity-aware (P(i) ~ (deg(i) + 1)^0.75),
and a negative that is in fact a positive of that user is re-drawn.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from bc_ray.exceptions import ConfigError

NEGATIVE_SAMPLERS = ("uniform", "popularity")
REDRAWS = 10


@dataclass
class Triples:
    user: torch.Tensor
    pos: torch.Tensor
    neg: torch.Tensor

    def __len__(self) -> int:
        return int(self.user.numel())

    def slice(self, start: int, stop: int) -> Triples:
        return Triples(self.user[start:stop], self.pos[start:stop], self.neg[start:stop])


class TripleSampler:
    def __init__(self, edge_user: torch.Tensor, edge_item: torch.Tensor, num_items: int,
                 negatives: str = "uniform", user_uniform: bool = True,
                 item_pool: torch.Tensor | None = None) -> None:
        if negatives not in NEGATIVE_SAMPLERS:
            raise ConfigError(f"unknown negative sampler {negatives!r}; expected one of "
                              f"{NEGATIVE_SAMPLERS}")
        self.user = edge_user.numpy()
        self.item = edge_item.numpy()
        self.num_items = num_items
        self.keys = np.sort(self.user * num_items + self.item)
        degree = np.bincount(self.user)
        self.edge_weight = (1.0 / degree[self.user]) if user_uniform else None
        pool = np.arange(num_items) if item_pool is None else item_pool.numpy()
        self.pool = pool
        if negatives == "popularity":
            weight = (np.bincount(self.item, minlength=num_items)[pool] + 1.0) ** 0.75
            self.pool_cdf = np.cumsum(weight) / weight.sum()
        else:
            self.pool_cdf = None

    def _negatives(self, size: int, rng: np.random.Generator) -> np.ndarray:
        if self.pool_cdf is None:
            return self.pool[rng.integers(0, self.pool.size, size)]
        return self.pool[np.searchsorted(self.pool_cdf, rng.random(size), side="right")
                         .clip(max=self.pool.size - 1)]

    def _is_positive(self, user: np.ndarray, item: np.ndarray) -> np.ndarray:
        keys = user * self.num_items + item
        position = np.searchsorted(self.keys, keys).clip(max=self.keys.size - 1)
        return self.keys[position] == keys

    def epoch(self, seed: int, size: int | None = None) -> Triples:
        """A shuffled epoch of as many triples as there are edges, or of `size` of them drawn
        afresh (a step budget: the work stays at `size` whatever the graph's size). The same for
        every seed-sharing worker, so data-parallel ranks can take equal shards of one epoch."""
        rng = np.random.default_rng(seed)
        count = self.user.size if size is None else min(size, self.user.size)
        if self.edge_weight is not None:
            chosen = rng.choice(self.user.size, size=count,
                                p=self.edge_weight / self.edge_weight.sum())
        elif size is None:
            chosen = rng.permutation(count)
        else:
            chosen = rng.choice(self.user.size, size=count, replace=False)
        user, pos = self.user[chosen], self.item[chosen]
        neg = self._negatives(count, rng)
        for _ in range(REDRAWS):
            clash = np.flatnonzero(self._is_positive(user, neg))
            if clash.size == 0:
                break
            neg[clash] = self._negatives(clash.size, rng)
        return Triples(torch.from_numpy(user), torch.from_numpy(pos), torch.from_numpy(neg))
