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
CHUNK = 1 << 20  # draws (or edges) per vectorised pass


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
    """Draws from the edges held as user rows: each user with edges has a run of items
    (ascending) in one array, so the sampler holds 8 bytes per edge and 24 per user with edges,
    and the positives test is a binary search within the user's run. A sharded worker passes
    its CSR rows themselves (`from_rows`), which it holds anyway: no copy per edge."""

    def __init__(self, edge_user: torch.Tensor, edge_item: torch.Tensor, num_items: int,
                 negatives: str = "uniform", user_uniform: bool = True,
                 item_pool: torch.Tensor | None = None) -> None:
        # Every edge as one sorted key (user-major), then split into the users' runs of items;
        # building them takes a second 8 bytes per edge for a moment. Since 2026-12-05: the
        # draws for a given seed differ from the per-edge weights' before (same distribution),
        # and users and items come back as int64.
        keys = edge_user.numpy().astype(np.int64) * num_items + edge_item.numpy()
        keys.sort()
        user = keys // num_items
        starts = np.flatnonzero(np.diff(user, prepend=-1))
        row_users = user[starts]
        del user
        keys %= num_items  # in place: the items, in the keys' order
        lengths = np.diff(np.append(starts, keys.size))
        self._setup(keys, 0, row_users, starts, lengths, num_items, negatives, user_uniform,
                    item_pool)

    @classmethod
    def from_rows(cls, crow: np.ndarray, items: np.ndarray, first_user: int, num_items: int,
                  item_offset: int = 0, negatives: str = "uniform", user_uniform: bool = True,
                  item_pool: torch.Tensor | None = None) -> TripleSampler:
        """Over CSR rows of users first_user.. (`crow`: their row pointers, from 0; `items`:
        their neighbours, `crow[-1]` of them, ascending within each row, as item indices plus
        `item_offset`, e.g. global node ids), kept as they are."""
        if items.size != crow[-1]:
            raise ValueError(f"{items.size} items for rows that hold {crow[-1]}")
        sampler = cls.__new__(cls)
        lengths = np.diff(crow)
        nonempty = np.flatnonzero(lengths)
        sampler._setup(items, item_offset, nonempty + first_user, crow[:-1][nonempty],
                       lengths[nonempty], num_items, negatives, user_uniform, item_pool)
        return sampler

    def _setup(self, items: np.ndarray, item_offset: int, row_users: np.ndarray,
               starts: np.ndarray, lengths: np.ndarray, num_items: int, negatives: str,
               user_uniform: bool, item_pool: torch.Tensor | None) -> None:
        if negatives not in NEGATIVE_SAMPLERS:
            raise ConfigError(f"unknown negative sampler {negatives!r}; expected one of "
                              f"{NEGATIVE_SAMPLERS}")
        self.num_items, self.user_uniform = num_items, user_uniform
        self._items, self._item_offset = items, item_offset
        # Drawing users uniformly, then one of the drawn user's edges uniformly, draws each edge
        # with probability 1 / (users x deg(user)): no weight per edge is kept.
        self.row_users = row_users.astype(np.int64, copy=False)
        self.user_starts = starts.astype(np.int64, copy=False)
        self.user_lengths = lengths.astype(np.int64, copy=False)
        pool = np.arange(num_items) if item_pool is None else item_pool.numpy()
        self.pool = pool
        if negatives == "popularity":
            counts = np.zeros(num_items, dtype=np.int64)
            for first in range(0, items.size, CHUNK):  # no copy of the edges' items
                counts += np.bincount(items[first:first + CHUNK] - item_offset,
                                      minlength=num_items)
            weight = (counts[pool] + 1.0) ** 0.75
            self.pool_cdf = np.cumsum(weight) / weight.sum()
        else:
            self.pool_cdf = None

    @property
    def num_edges(self) -> int:
        """The edges it draws from (each repeat of a pair counted)."""
        return int(self._items.size)

    def _negatives(self, size: int, rng: np.random.Generator) -> np.ndarray:
        if self.pool_cdf is None:
            return self.pool[rng.integers(0, self.pool.size, size)]
        return self.pool[np.searchsorted(self.pool_cdf, rng.random(size), side="right")
                         .clip(max=self.pool.size - 1)]

    def _is_positive(self, row: np.ndarray, item: np.ndarray) -> np.ndarray:
        """Whether `item` is among the items of each user row `row`: a binary search within
        each row's run, a chunk of draws at a time (an epoch of every edge draws tens of
        millions: its temporaries stay a chunk's)."""
        if row.size > CHUNK:
            return np.concatenate([self._is_positive(row[first:first + CHUNK],
                                                     item[first:first + CHUNK])
                                   for first in range(0, row.size, CHUNK)])
        low = self.user_starts[row]
        high = low + self.user_lengths[row]
        wanted = item + self._item_offset
        last = self._items.size - 1
        while True:
            open_ = low < high
            if not open_.any():
                break
            middle = (low + high) // 2
            below = self._items[np.minimum(middle, last)] < wanted
            low = np.where(open_ & below, middle + 1, low)
            high = np.where(open_ & ~below, middle, high)
        end = self.user_starts[row] + self.user_lengths[row]
        return (low < end) & (self._items[np.minimum(low, last)] == wanted)

    def epoch(self, seed: int, size: int | None = None) -> Triples:
        """A shuffled epoch of as many triples as there are edges, or of `size` of them drawn
        afresh (a step budget: the work stays at `size` whatever the graph's size). The same for
        every seed-sharing worker, so data-parallel ranks can take equal shards of one epoch."""
        rng = np.random.default_rng(seed)
        edges = self._items.size
        count = edges if size is None else min(size, edges)
        if self.user_uniform:
            row = rng.integers(0, self.user_starts.size, count)
            chosen = self.user_starts[row] + (
                rng.random(count) * self.user_lengths[row]).astype(np.int64)
        else:
            chosen = rng.permutation(count) if size is None else rng.choice(
                edges, size=count, replace=False)
            row = np.searchsorted(self.user_starts, chosen, side="right") - 1
        user = self.row_users[row]
        pos = self._items[chosen] - self._item_offset
        neg = self._negatives(count, rng)
        pending = np.arange(count)  # a draw that is not a positive stays as it is
        for _ in range(REDRAWS):
            clash = pending[self._is_positive(row[pending], neg[pending])]
            if clash.size == 0:
                break
            neg[clash] = self._negatives(clash.size, rng)
            pending = clash
        return Triples(torch.from_numpy(user), torch.from_numpy(pos), torch.from_numpy(neg))
