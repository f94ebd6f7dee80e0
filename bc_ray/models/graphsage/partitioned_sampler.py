"""Neighbour sampling when no worker holds the whole graph: each worker holds the CSR rows of the
nodes it owns (`RowOwners`: a range of users and a range of items), and a hop sends every
destination node to its owner, which draws its neighbours and sends them back (DGL's and PyG's
distributed samplers do the same with RPCs; here it is four all-to-alls per hop). The sample is
the one `NeighborSampler` would draw from the whole graph: with fanout -1, the same subgraph.
"""

from __future__ import annotations

import numpy as np
import torch

from bc_ray.core.row_shards import RowOwners, exchange, request
from bc_ray.models.graphsage.sampler import NeighborSampler, draw_neighbours


def _chunk_sums(values: torch.Tensor, splits: list[int]) -> list[int]:
    """The sum of each consecutive chunk of `values` (chunk sizes `splits`): how many
    neighbours go to, or come from, each worker."""
    return [int(chunk.sum()) for chunk in torch.split(values, splits)]


class PartitionedNeighborSampler(NeighborSampler):
    """`NeighborSampler` over the rows this worker owns; `sample` is a collective that every
    worker calls once per step."""

    def __init__(self, owners: RowOwners, crow: np.ndarray, neighbours: np.ndarray,
                 fanouts: list[int], generator: torch.Generator | None = None) -> None:
        """`crow`, `neighbours`: this worker's rows (its users, then its items), neighbours
        as global node ids."""
        self.owners = owners
        self.rowptr, self.col = torch.from_numpy(crow), torch.from_numpy(neighbours)
        self.fanouts = fanouts
        self.generator = generator

    def _draw(self, dst: torch.Tensor, fanout: int) -> tuple[torch.Tensor, torch.Tensor]:
        asked = request(self.owners, dst)
        served_of, drawn = draw_neighbours(self.rowptr, self.col, asked.served, fanout,
                                           self.generator)
        served_counts = torch.bincount(served_of, minlength=asked.served.numel())
        counts, _ = exchange(served_counts, asked.served_splits, asked.splits)
        neighbours, _ = exchange(drawn, _chunk_sums(served_counts, asked.served_splits),
                                 _chunk_sums(counts, asked.splits))
        return torch.repeat_interleave(asked.order, counts), neighbours

    @property
    def nbytes(self) -> int:
        return self.rowptr.numel() * 8 + self.col.numel() * 8
