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
        self.num_items = num_items
        # Every edge as one sorted key (user-major): the positives test is a binary search, and
        # an edge's user and item are computed from its key when drawn, so the sampler holds 8
        # bytes per edge and 16 per user with edges (a sharded worker at 100M edges holds tens
        # of millions of edges; building the keys takes a second 8 bytes per edge for a moment).
        # Since 2026-12-05: the draws for a given seed differ from the per-edge weights' before
        # (same distribution), and users and items come back as int64.
        self.keys = edge_user.numpy().astype(np.int64) * num_items + edge_item.numpy()
        self.keys.sort()
        self.user_uniform = user_uniform
        # Drawing users uniformly, then one of the drawn user's edges uniformly, draws each edge
        # with probability 1 / (users x deg(user)): no weight per edge is kept.
        user = self.keys // num_items
        self.user_starts = np.flatnonzero(np.diff(user, prepend=-1))
        self.user_lengths = np.diff(np.append(self.user_starts, user.size))
        del user
        pool = np.arange(num_items) if item_pool is None else item_pool.numpy()
        self.pool = pool
        if negatives == "popularity":
            weight = (np.bincount(self.keys % num_items, minlength=num_items)[pool] + 1.0) ** 0.75
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
        edges = self.keys.size
        count = edges if size is None else min(size, edges)
        if self.user_uniform:
            which = rng.integers(0, self.user_starts.size, count)
            chosen = self.user_starts[which] + (
                rng.random(count) * self.user_lengths[which]).astype(np.int64)
        elif size is None:
            chosen = rng.permutation(count)
        else:
            chosen = rng.choice(edges, size=count, replace=False)
        user, pos = np.divmod(self.keys[chosen], self.num_items)
        neg = self._negatives(count, rng)
        for _ in range(REDRAWS):
            clash = np.flatnonzero(self._is_positive(user, neg))
            if clash.size == 0:
                break
            neg[clash] = self._negatives(clash.size, rng)
        return Triples(torch.from_numpy(user), torch.from_numpy(pos), torch.from_numpy(neg))
